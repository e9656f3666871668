"""SQL that reads the jobs table: counts, one job, its events, audits."""

COUNT_JOBS_BY_STATE = "SELECT state, count(*) FROM jobs GROUP BY state"

COUNT_SOURCE_JOBS_BY_STATE = "SELECT state, count(*) FROM jobs WHERE source = %(source)s GROUP BY state"

COUNT_OPEN_JOBS = """
SELECT count(*) FROM jobs WHERE mode = %(mode)s AND state IN ('pending', 'claimed', 'running')
  AND (%(pins)s::text[] IS NULL OR processor || ' ' || processor_version = ANY (%(pins)s::text[]))
"""

JOB_EVENTS = """
SELECT job_id, at, actor, from_state, to_state, attempt, reason
FROM job_events WHERE job_id = %(job_id)s ORDER BY id
"""

GET_JOB = """
SELECT id, source, external_id, processor, processor_version, mode, payload, state, attempt, max_attempts,
       lease_owner, lease_token, lease_expires_at, batch_id, custom_id, output, raw_output, errors, reason, usage,
       cost_usd, callback_url, due_at, reviewed, created_at, finished_at
FROM jobs WHERE id = %(job_id)s
"""

RECENT_SUCCEEDED = """
SELECT id, processor, processor_version, output FROM jobs
WHERE state = 'succeeded' ORDER BY finished_at DESC NULLS LAST LIMIT %(limit)s
"""

# Jobs still marked in flight although their batch is already collected: a settling bug if ever > 0.
STRANDED_IN_COLLECTED_BATCHES = """
SELECT count(*) FROM jobs j JOIN batches b ON b.id = j.batch_id
WHERE j.state IN ('submitted', 'collected') AND b.state IN ('collected', 'archived')
"""

# A page of jobs, newest first (`before`: the id the previous page ended at), by optional filters. `batch`
# matches Forge's batch id or its forge/provider batch id.
LIST_JOBS = """
SELECT j.id, j.source, j.external_id, j.processor, j.processor_version, j.mode, j.state, j.attempt,
       j.max_attempts, j.batch_id, j.reason, j.cost_usd, j.created_at, j.finished_at
FROM jobs j
WHERE (%(states)s::text[] IS NULL OR j.state = ANY(%(states)s::text[]))
  AND (%(processor)s::text IS NULL OR j.processor = %(processor)s)
  AND (%(batch_id)s::bigint IS NULL OR j.batch_id = %(batch_id)s)
  AND (%(since)s::timestamptz IS NULL OR j.created_at >= %(since)s)
  AND (%(before)s::bigint IS NULL OR j.id < %(before)s)
ORDER BY j.id DESC
LIMIT %(limit)s
"""

# The ids a filter selects (an operator's bulk retry or cancel), oldest first.
SELECT_IDS = """
SELECT j.id FROM jobs j
WHERE j.state = ANY(%(states)s::text[])
  AND (%(processor)s::text IS NULL OR j.processor = %(processor)s)
  AND (%(since)s::timestamptz IS NULL OR j.created_at >= %(since)s)
ORDER BY j.id
LIMIT %(limit)s
"""

# Jobs by their intake ids (external_id), in any source.
BY_EXTERNAL_IDS = """
SELECT external_id, id, source FROM jobs WHERE external_id = ANY(%(external_ids)s::text[]) ORDER BY id
"""

STATES_OF = "SELECT id, state FROM jobs WHERE id = ANY(%(ids)s::bigint[])"

PROCESSORS_AND_MODES_OF = "SELECT DISTINCT processor, mode FROM jobs WHERE id = ANY(%(ids)s::bigint[])"

# Each attempt's provider answer as collected from a batch (raw body, outcome, usage, error).
JOB_RESULTS = """
SELECT r.attempt, r.batch_id, b.forge_batch_id, b.provider_batch_id, r.outcome, r.status_code, r.stop_reason,
       r.usage, r.error_class, r.error_message, r.raw, r.received_at
FROM batch_results r JOIN batches b ON b.id = r.batch_id
WHERE r.job_id = %(job_id)s ORDER BY r.received_at
"""

JOB_COSTS = """
SELECT attempt, batch_id, provider, model, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens,
       cost_usd, pricing_version, batch_priced, booked_at
FROM costs WHERE job_id = %(job_id)s ORDER BY attempt
"""

JOB_ACCEPTED = """
SELECT attempt, processor, processor_version, fingerprint, accepted_by, accepted_at
FROM accepted_outputs WHERE job_id = %(job_id)s ORDER BY attempt
"""

# The jobs one intake source holds under these intake ids (hot or archived: an archived id stays taken), for
# a client that submits the same ids again.
BY_INTAKE_IDS = """
SELECT external_id, id, processor FROM jobs
WHERE source = %(source)s AND external_id = ANY(%(external_ids)s::text[])
UNION ALL
SELECT external_id, id, row->>'processor' FROM jobs_archive
WHERE source = %(source)s AND external_id = ANY(%(external_ids)s::text[])
"""

# What became of jobs (hot or archived), oldest first: by ids (each part on its primary key), or all the
# jobs of a processor.
OUTCOMES_OF = """
SELECT id, external_id, processor, processor_version, state, reason, output, cost_usd FROM jobs
WHERE id = ANY(%(ids)s::bigint[])
UNION ALL
SELECT id, external_id, row->>'processor', row->>'processor_version', state, row->>'reason', row->'output',
       (row->>'cost_usd')::numeric
FROM jobs_archive WHERE id = ANY(%(ids)s::bigint[])
ORDER BY id
"""

OUTCOMES_OF_PROCESSOR = """
SELECT id, external_id, processor, processor_version, state, reason, output, cost_usd FROM all_jobs
WHERE processor = %(processor)s
ORDER BY id
"""
