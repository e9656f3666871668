"""SQL for provider batches: the submission intent, status, stored results, and settling each job.

Jobs inside a batch hold no lease: the batch owns them from the intent on. Every job change is guarded
by (batch_id, custom_id, expected state), so collecting a batch twice changes nothing the second time.
"""

# The submission intent, committed before the provider is called: the batch row in `submitting`, and
# its jobs moved from claimed to submitted (fenced by their lease tokens) with their custom_ids.
INSERT_BATCH = """
INSERT INTO batches (provider, model, processor, processor_version, state, request_count, bytes, submit_attempts,
                     submitter)
VALUES (%(provider)s, %(model)s, %(processor)s, %(version)s, 'submitting', 0, 0, 1, %(actor)s)
RETURNING id, forge_batch_id
"""

SIZE_BATCH = """
UPDATE batches SET request_count = %(count)s, bytes = %(bytes)s, updated_at = now() WHERE id = %(batch_id)s
"""

MARK_SUBMITTED = """
UPDATE batches
SET state = 'in_progress', provider_batch_id = %(provider_batch_id)s, input_file_id = %(input_file_id)s,
    submitted_at = now(), updated_at = now(), last_error = NULL
WHERE id = %(batch_id)s AND state = 'submitting'
"""

# Batches whose intent was written but whose submission never finished (a crash, an ambiguous answer).
# Read-only, for the sensor that decides whether a build run is needed; resuming claims them below.
STALE_SUBMITTING = """
SELECT id FROM batches
WHERE state = 'submitting' AND updated_at < now() - make_interval(secs => %(older_than)s)
ORDER BY id
"""

# Claim one stale submission for this resumer alone, in one statement. SKIP LOCKED passes over a row
# another resumer is claiming right now; FOR UPDATE re-checks the WHERE on the newest row version, so a
# row another resumer claimed (and committed) after this statement's snapshot is no longer stale and is
# passed over too. Moving updated_at to now() is the claim: nobody sees the batch stale again until
# `older_than` has passed once more, which the caller keeps well above one submission's longest run.
# MATERIALIZED so the locking SELECT runs exactly once.
CLAIM_STALE_SUBMISSION = """
WITH stale AS MATERIALIZED (
    SELECT id FROM batches
    WHERE state = 'submitting' AND updated_at < now() - make_interval(secs => %(older_than)s)
    ORDER BY id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
UPDATE batches b SET submit_attempts = b.submit_attempts + 1, updated_at = now(), submitter = %(actor)s
FROM stale s
WHERE b.id = s.id AND b.state = 'submitting'
RETURNING b.id, b.provider, b.created_at, b.submit_attempts
"""

# Provider batch ids the store already holds for `provider`, submitted since a time: a lookup for one
# batch's provider batch must never pick one of these (they belong to other Forge batches).
KNOWN_PROVIDER_BATCHES = """
SELECT provider_batch_id FROM batches
WHERE provider = %(provider)s AND provider_batch_id IS NOT NULL
  AND coalesce(submitted_at, created_at) >= to_timestamp(%(since)s)
"""

BATCH_MEMBERS = """
SELECT id, custom_id, processor, processor_version, payload, attempt, max_attempts, state
FROM jobs WHERE batch_id = %(batch_id)s ORDER BY id
"""

GET_BATCH = """
SELECT id, forge_batch_id, provider, model, processor, processor_version, state, provider_batch_id, input_file_id,
       request_count, bytes, counts, raw_status, submit_attempts, last_error, created_at, submitted_at,
       ended_at, collected_at
FROM batches WHERE id = %(batch_id)s
"""

OPEN_BATCHES = """
SELECT id, forge_batch_id, provider, provider_batch_id, state FROM batches
WHERE state IN ('in_progress', 'cancelling') AND provider_batch_id IS NOT NULL
ORDER BY id
"""

ENDED_UNCOLLECTED = """
SELECT id, provider FROM batches
WHERE state IN ('ended_completed', 'ended_expired', 'ended_cancelled', 'ended_failed')
ORDER BY id
"""

UPDATE_STATUS = """
UPDATE batches
SET state = %(state)s, counts = %(counts)s, raw_status = %(raw_status)s, updated_at = now(),
    ended_at = CASE WHEN %(state)s LIKE 'ended_%%' THEN coalesce(ended_at, now()) ELSE ended_at END
WHERE id = %(batch_id)s AND state IN ('in_progress', 'cancelling')
RETURNING id
"""

FAIL_SUBMISSION = """
UPDATE batches SET state = 'ended_failed', last_error = %(error)s, ended_at = now(), updated_at = now()
WHERE id = %(batch_id)s AND state = 'submitting'
RETURNING id
"""

# Store result lines as received; a second download of the same batch inserts nothing.
# The rows come as one JSON document: one parameter to encode instead of twelve arrays of values.
INSERT_RESULTS = """
INSERT INTO batch_results (batch_id, custom_id, job_id, attempt, outcome, status_code, text, tool_input,
                           stop_reason, usage, error_class, error_message, raw)
SELECT %(batch_id)s, custom_id, job_id, attempt, outcome, status_code, text, tool_input, stop_reason, usage,
       error_class, error_message, raw
FROM jsonb_to_recordset(%(rows)s::jsonb) AS r(
    custom_id text, job_id bigint, attempt int, outcome text, status_code int, text text, tool_input jsonb,
    stop_reason text, usage jsonb, error_class text, error_message text, raw jsonb)
ON CONFLICT (batch_id, custom_id) DO NOTHING
"""

# An embedding's vector (float32 bytes) beside its stored line, set once (migration 019).
STORE_RESULT_VECTORS = """
UPDATE batch_results r SET vector = v.vector
FROM unnest(%(custom_ids)s::text[], %(vectors)s::bytea[]) AS v(custom_id, vector)
WHERE r.batch_id = %(batch_id)s AND r.custom_id = v.custom_id AND r.vector IS NULL
"""

STORED_RESULTS = """
SELECT custom_id, job_id, attempt, outcome, status_code, text, tool_input, stop_reason, usage, error_class,
       error_message, raw, vector
FROM batch_results WHERE batch_id = %(batch_id)s ORDER BY job_id
"""

MARK_BATCH_COLLECTED = """
UPDATE batches SET state = 'collected', collected_at = now(), updated_at = now()
WHERE id = %(batch_id)s AND state LIKE 'ended_%%'
RETURNING id
"""

# Succeeded batch jobs (the newest `limit`) missing what acceptance must leave behind: the validated
# output, and, when their result reported tokens, the cost of that attempt in the ledger (a model
# without a price, or a settling bug, leaves it out).
SUCCEEDED_WITHOUT_OUTPUT_OR_COST = """
WITH recent AS MATERIALIZED (
    SELECT id, attempt, output, usage FROM jobs
    WHERE state = 'succeeded' AND batch_id IS NOT NULL
    ORDER BY finished_at DESC NULLS LAST
    LIMIT %(limit)s
)
SELECT r.id,
       CASE WHEN r.output IS NULL OR r.output = 'null'::jsonb THEN 'no validated output stored'
            WHEN c.job_id IS NULL THEN 'tokens used but no cost booked for attempt ' || r.attempt
            ELSE 'tokens booked without a price for attempt ' || r.attempt || ' (no price for its model)' END
FROM recent r
LEFT JOIN costs c ON c.job_id = r.id AND c.attempt = r.attempt
WHERE r.output IS NULL OR r.output = 'null'::jsonb
   OR (coalesce((r.usage ->> 'input_tokens')::int, 0) + coalesce((r.usage ->> 'output_tokens')::int, 0) > 0
       AND (c.job_id IS NULL OR c.cost_usd IS NULL))
ORDER BY r.id
"""

BATCH_COST = "SELECT coalesce(sum(cost_usd), 0) FROM costs WHERE batch_id = %(batch_id)s"

TOTAL_COST = "SELECT coalesce(sum(cost_usd), 0) FROM costs"

# Jobs of one mode due now: how many, the highest id, and their latest change (ms since the epoch).
# A job that comes due again (requeued, released, held by a budget) was changed when it went back to
# pending, so the latest change moves and the sensors' run keys with it. A row another application
# inserted counts as batch work whatever mode it asks for until intake has reviewed it: intake runs in the
# build run, and no claim takes the row before.
DUE_JOBS = """
SELECT count(*), coalesce(max(id), 0), coalesce(floor(extract(epoch FROM max(updated_at)) * 1000), 0)::bigint
FROM jobs
WHERE state = 'pending' AND run_after <= now()
  AND CASE WHEN reviewed THEN mode = %(mode)s ELSE %(mode)s = 'batch' END
"""

COUNT_BATCHES_SINCE = """
SELECT state, count(*) FROM batches WHERE created_at >= %(since)s GROUP BY state
"""

COUNT_BATCHES_BY_STATE = "SELECT state, count(*) FROM batches GROUP BY state"


# -- provider storage ------------------------------------------------------------------------------
# Batches whose provider files may go: every line stored (ended or collected, no job of it still waiting
# for its line), collected at least `retention_s` ago (an ended batch not collected yet never qualifies
# unless retention is 0 and its lines are stored), not released yet.
BATCHES_TO_RELEASE = """
SELECT b.id, b.provider, b.provider_batch_id FROM batches b
WHERE b.provider = %(provider)s AND b.provider_batch_id IS NOT NULL AND b.files_released_at IS NULL
  AND (b.state = 'collected' AND b.collected_at <= now() - make_interval(secs => %(retention_s)s)
       OR %(retention_s)s = 0 AND b.state LIKE 'ended_%%')
  AND (%(batch_id)s::bigint IS NULL OR b.id = %(batch_id)s)
  AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.batch_id = b.id AND j.state = 'submitted')
  AND EXISTS (SELECT 1 FROM batch_results r WHERE r.batch_id = b.id)
ORDER BY b.id LIMIT %(limit)s
"""

MARK_FILES_RELEASED = "UPDATE batches SET files_released_at = now() WHERE id = %(batch_id)s"

# Collected Anthropic batches older than `days`, still held at the provider.
BATCHES_TO_FORGET = """
SELECT id, provider_batch_id FROM batches
WHERE provider = 'anthropic' AND state = 'collected' AND provider_batch_id IS NOT NULL
  AND provider_forgotten_at IS NULL AND collected_at <= now() - make_interval(days => %(days)s)
ORDER BY id LIMIT %(limit)s
"""

MARK_FORGOTTEN = "UPDATE batches SET provider_forgotten_at = now() WHERE id = %(batch_id)s"

# Anthropic batches not collected yet whose results the provider deletes within `days` (29 days after
# creation): collect them now or lose them.
RESULTS_AT_RISK = """
SELECT id, provider_batch_id, state, submitted_at,
       submitted_at + interval '29 days' AS results_deleted_at FROM batches
WHERE provider = 'anthropic' AND provider_batch_id IS NOT NULL AND state NOT IN ('collected', 'archived')
  AND submitted_at <= now() - make_interval(days => 29) + make_interval(days => %(days)s)
ORDER BY submitted_at
"""

# Input file ids Forge's batches (hot or archived) point at: an upload not among them was never used.
KNOWN_INPUT_FILES = """
SELECT input_file_id FROM batches WHERE input_file_id = ANY(%(file_ids)s::text[])
UNION SELECT row ->> 'input_file_id' FROM batches_archive WHERE row ->> 'input_file_id' = ANY(%(file_ids)s::text[])
"""
