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
