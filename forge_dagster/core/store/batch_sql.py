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

ATTACH_JOBS = """
WITH input AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(tokens)s::uuid[], %(custom_ids)s::text[]) AS t(id, token, custom_id)
), moved AS (
    UPDATE jobs j
    SET state = 'submitted', batch_id = %(batch_id)s, custom_id = i.custom_id,
        lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = now()
    FROM input i
    WHERE j.id = i.id AND j.lease_token = i.token AND j.state = 'claimed'
    RETURNING j.id, j.attempt
), events AS (
    INSERT INTO job_events (job_id, actor, from_state, to_state, attempt, reason)
    SELECT id, %(actor)s, 'claimed', 'submitted', attempt, 'batch ' || %(batch_id)s FROM moved
)
SELECT id FROM moved
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

# Jobs whose results are stored move submitted -> collected.
MARK_COLLECTED = """
WITH moved AS (
    UPDATE jobs j SET state = 'collected', updated_at = now()
    FROM batch_results r
    WHERE r.batch_id = %(batch_id)s AND j.id = r.job_id AND j.batch_id = r.batch_id
      AND j.custom_id = r.custom_id AND j.state = 'submitted'
    RETURNING j.id, j.attempt
), events AS (
    INSERT INTO job_events (job_id, actor, from_state, to_state, attempt, reason)
    SELECT id, %(actor)s, 'submitted', 'collected', attempt, 'result stored' FROM moved
)
SELECT count(*) FROM moved
"""

STORED_RESULTS = """
SELECT custom_id, job_id, attempt, outcome, status_code, text, tool_input, stop_reason, usage, error_class,
       error_message, raw
FROM batch_results WHERE batch_id = %(batch_id)s ORDER BY job_id
"""

# Settle collected (or, for a failed submission, submitted) jobs. kind: succeeded | invalid | failed |
# retry. A succeeded settlement carries what validation accepted (processor, version, fingerprint), written
# to accepted_outputs beside the state change. A retry goes back to pending after its delay until max_attempts, then to its `exhausted` state
# (invalid for output that never validated, dead for provider-side trouble).
SETTLE_JOBS = """
WITH input AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(custom_ids)s::text[], %(kinds)s::text[], %(outputs)s::jsonb[],
                         %(raw_outputs)s::text[], %(reasons)s::text[], %(exhausted)s::text[],
                         %(delays)s::float8[], %(usages)s::jsonb[], %(costs)s::numeric[],
                         %(accepted)s::jsonb[])
        AS t(id, custom_id, kind, output, raw_output, reason, exhausted, delay, usage, cost, accepted)
), current AS (
    SELECT j.id, j.state AS from_state, j.attempt, j.max_attempts, i.kind, i.output, i.raw_output, i.reason,
           i.exhausted, i.delay, i.usage, i.cost, i.accepted,
           CASE WHEN i.kind <> 'retry' THEN i.kind
                WHEN j.attempt >= j.max_attempts THEN i.exhausted
                ELSE 'pending' END AS next_state
    FROM jobs j JOIN input i ON j.id = i.id
    WHERE j.batch_id = %(batch_id)s AND j.custom_id = i.custom_id AND j.state = ANY(%(from_states)s::text[])
    FOR UPDATE OF j
), accepted AS (  -- what validation accepted, checked by the store's trigger against the job's pin
    INSERT INTO accepted_outputs (job_id, attempt, processor, processor_version, fingerprint, output_digest,
                                  accepted_by)
    SELECT c.id, c.attempt, c.accepted ->> 'processor', c.accepted ->> 'processor_version',
           c.accepted ->> 'fingerprint', md5(c.output::text), c.accepted ->> 'accepted_by'
    FROM current c WHERE c.next_state = 'succeeded'
), done AS (
    UPDATE jobs j
    SET state = c.next_state,
        output = CASE WHEN c.next_state = 'succeeded' THEN c.output ELSE j.output END,
        raw_output = c.raw_output,
        reason = CASE WHEN c.kind = 'retry' AND c.next_state <> 'pending'
                      THEN 'max attempts (' || c.max_attempts || ') reached; last: ' || c.reason
                      ELSE c.reason END,
        errors = CASE WHEN c.next_state = 'succeeded' THEN j.errors
                      ELSE coalesce(j.errors, '[]'::jsonb)
                           || jsonb_build_array(jsonb_build_object('attempt', c.attempt, 'reason', c.reason)) END,
        usage = c.usage,
        cost_usd = coalesce(j.cost_usd, 0) + coalesce(c.cost, 0),
        run_after = CASE WHEN c.next_state = 'pending' THEN now() + make_interval(secs => c.delay)
                         ELSE j.run_after END,
        batch_id = CASE WHEN c.next_state = 'pending' THEN NULL ELSE j.batch_id END,
        finished_at = CASE WHEN c.next_state = 'pending' THEN NULL ELSE now() END,
        updated_at = now()
    FROM current c
    WHERE j.id = c.id
    RETURNING j.id, j.state, j.attempt, j.reason, c.from_state, c.cost, c.usage
), booked AS (
    INSERT INTO costs (job_id, attempt, batch_id, provider, model, processor, input_tokens, cached_input_tokens,
                       output_tokens, reasoning_tokens, cost_usd, pricing_version, batch_priced)
    SELECT d.id, d.attempt, %(batch_id)s, %(provider)s, %(model)s, %(processor)s,
           coalesce((d.usage ->> 'input_tokens')::int, 0), coalesce((d.usage ->> 'cached_input_tokens')::int, 0),
           coalesce((d.usage ->> 'output_tokens')::int, 0), coalesce((d.usage ->> 'reasoning_tokens')::int, 0),
           d.cost, %(pricing_version)s, %(batch_priced)s
    FROM done d  -- billed attempts: priced, or unpriced (NULL cost) with tokens
    WHERE d.cost IS NOT NULL
       OR coalesce((d.usage ->> 'input_tokens')::int, 0) + coalesce((d.usage ->> 'output_tokens')::int, 0) > 0
    ON CONFLICT (job_id, attempt) DO NOTHING
), events AS (
    INSERT INTO job_events (job_id, actor, from_state, to_state, attempt, reason)
    SELECT id, %(actor)s, from_state, state, attempt, reason FROM done
)
SELECT id, state FROM done
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
