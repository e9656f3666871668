"""SQL for the jobs table and its job_events audit, one named statement per operation.

Every statement that changes a leased job is fenced: it matches on `id`, `lease_token` and the leased
state, so a worker whose lease was taken over updates nothing. Every transition writes its job_events
row in the same statement (a data-modifying CTE), so the audit cannot drift from the table.
"""

# Claim up to k jobs in one statement. The two candidate sets are MATERIALIZED so each
# `SELECT ... FOR UPDATE SKIP LOCKED` runs exactly once: an inlined CTE may be re-evaluated by the
# planner and lock rows other than the ones the UPDATE touches. Expired leases come first and are
# reclaimed at once (no operator); fresh work is read through jobs_claim_idx in (run_after, id) order,
# skipping rows another application inserted that intake has not reviewed yet. `pins` ("name version"
# strings, or NULL for every processor) keeps a handler worker to the processor versions that declare it.
# The attempt is counted here, at claim time, and every claim gets a new random lease token. A job
# reclaimed from `claimed` (a builder died before putting it in a batch) was never sent to a provider: its
# attempt is not counted again, so our crashes do not spend provider attempts.
CLAIM_JOBS = """
WITH expired AS MATERIALIZED (
    SELECT id, state AS from_state
    FROM jobs
    WHERE state IN ('claimed', 'running') AND lease_expires_at < now()
      AND mode = %(mode)s AND (attempt < max_attempts OR state = 'claimed')
      AND (%(pins)s::text[] IS NULL OR processor || ' ' || processor_version = ANY (%(pins)s::text[]))
    ORDER BY lease_expires_at
    LIMIT %(k)s
    FOR UPDATE SKIP LOCKED
), fresh AS MATERIALIZED (
    SELECT id, 'pending'::text AS from_state
    FROM jobs
    WHERE state = 'pending' AND mode = %(mode)s AND run_after <= now() AND reviewed
      AND (%(pins)s::text[] IS NULL OR processor || ' ' || processor_version = ANY (%(pins)s::text[]))
    ORDER BY run_after, id
    LIMIT %(k)s
    FOR UPDATE SKIP LOCKED
), picked AS (
    SELECT id, from_state FROM expired
    UNION ALL
    SELECT id, from_state FROM fresh
    LIMIT %(k)s
), claimed AS (
    UPDATE jobs j
    SET state = %(to_state)s,
        attempt = j.attempt + CASE WHEN p.from_state = 'claimed' THEN 0 ELSE 1 END,
        lease_owner = %(owner)s,
        lease_token = gen_random_uuid(),
        lease_expires_at = now() + make_interval(secs => %(ttl)s),
        updated_at = now()
    FROM picked p
    -- The ANY(ARRAY(...)) makes the join a primary-key lookup whatever the estimate; without it the
    -- planner hash-joins `picked` against a full scan of jobs once k is large (measured: 6.8 -> 3.9 ms).
    WHERE j.id = p.id AND j.id = ANY (ARRAY(SELECT id FROM picked))
    RETURNING j.id, j.external_id, j.processor, j.processor_version, j.mode, j.payload, j.attempt,
              j.max_attempts, j.lease_token, j.lease_expires_at, j.callback_url, p.from_state
), events AS (
    INSERT INTO job_events (job_id, actor, from_state, to_state, attempt, reason)
    SELECT id, %(owner)s, from_state, %(to_state)s, attempt,
           CASE WHEN from_state = 'pending' THEN NULL
                WHEN from_state = 'claimed' THEN 'reclaimed: lease expired before submission (attempt not charged)'
                ELSE 'reclaimed: lease expired' END
    FROM claimed
)
SELECT id, external_id, processor, processor_version, mode, payload, attempt, max_attempts,
       lease_token, lease_expires_at, callback_url
FROM claimed
ORDER BY id
"""

# Extend the leases this worker still holds; the ids returned are the ones it still owns.
HEARTBEAT_JOBS = """
WITH held AS (
    SELECT j.id FROM jobs j JOIN unnest(%(ids)s::bigint[], %(tokens)s::uuid[]) AS h(id, token)
        ON j.id = h.id AND j.lease_token = h.token
    WHERE j.state IN ('claimed', 'running')
    ORDER BY j.id FOR UPDATE OF j  -- in id order, as every other statement that locks several jobs
)
UPDATE jobs j
SET lease_expires_at = now() + make_interval(secs => %(ttl)s)
FROM held WHERE j.id = held.id
RETURNING j.id
"""

# Succeed leased jobs with their accepted outputs: the accepted_outputs row of each attempt and the state
# change are written by one statement. The job's pinned processor version must be the one the output was
# validated against; the store's trigger (migration 012) checks the row, its fingerprint and the digest.
SUCCEED_JOBS = """
WITH input AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(tokens)s::uuid[], %(outputs)s::jsonb[], %(processors)s::text[],
                         %(versions)s::text[], %(fingerprints)s::text[], %(accepted_by)s::text[])
        AS t(id, token, output, processor, version, fingerprint, accepted_by)
), held AS (
    SELECT j.id, j.attempt, i.output, i.processor, i.version, i.fingerprint, i.accepted_by
    FROM jobs j JOIN input i ON j.id = i.id AND j.lease_token = i.token
    WHERE j.state = %(from_state)s AND j.processor = i.processor AND j.processor_version = i.version
    ORDER BY j.id FOR UPDATE OF j  -- in id order (see FINISH_JOBS)
), accepted AS (
    INSERT INTO accepted_outputs (job_id, attempt, processor, processor_version, fingerprint, output_digest,
                                  accepted_by)
    SELECT id, attempt, processor, version, fingerprint, md5(output::text), accepted_by FROM held
), done AS (
    UPDATE jobs j
    SET state = 'succeeded', output = h.output, reason = %(reason)s,
        lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
        finished_at = now(), updated_at = now()
    FROM held h
    WHERE j.id = h.id
    RETURNING j.id, j.attempt, j.reason
), events AS (
    INSERT INTO job_events (job_id, actor, from_state, to_state, attempt, reason)
    SELECT id, %(actor)s, %(from_state)s, 'succeeded', attempt, reason FROM done
)
SELECT id FROM done
"""

# Finish leased jobs in a terminal state other than succeeded (invalid, failed), keeping no output.
FINISH_JOBS = """
WITH input AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(tokens)s::uuid[], %(reasons)s::text[]) AS t(id, token, reason)
), held AS (
    SELECT j.id, i.reason FROM jobs j JOIN input i ON j.id = i.id AND j.lease_token = i.token
    WHERE j.state = %(from_state)s
    ORDER BY j.id FOR UPDATE OF j  -- in id order, so a heartbeat over the same jobs cannot deadlock with it
), done AS (
    UPDATE jobs j
    SET state = %(to_state)s, output = NULL, reason = h.reason,
        lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
        finished_at = now(), updated_at = now()
    FROM held h
    WHERE j.id = h.id
    RETURNING j.id, j.attempt, j.reason
), events AS (
    INSERT INTO job_events (job_id, actor, from_state, to_state, attempt, reason)
    SELECT id, %(actor)s, %(from_state)s, %(to_state)s, attempt, reason FROM done
)
SELECT id FROM done
"""

# A leased job failed. Not retryable: `failed`. Retryable: back to `pending` with attempt counted
# and a backoff with jitter, or `dead` once max_attempts is reached. Each failure is kept in `errors`.
FAIL_JOBS = """
WITH input AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(tokens)s::uuid[], %(reasons)s::text[], %(retryable)s::boolean[],
                         %(delays)s::float8[])
        AS t(id, token, reason, retryable, delay)
), current AS (
    SELECT j.id, j.attempt, j.max_attempts, i.reason, i.retryable, i.delay,
           CASE WHEN NOT i.retryable THEN 'failed'
                WHEN j.attempt >= j.max_attempts THEN 'dead'
                ELSE 'pending' END AS next_state
    FROM jobs j JOIN input i ON j.id = i.id
    WHERE j.lease_token = i.token AND j.state = %(from_state)s
    ORDER BY j.id FOR UPDATE OF j  -- in id order (see FINISH_JOBS)
), done AS (
    UPDATE jobs j
    SET state = c.next_state,
        reason = CASE WHEN c.next_state = 'dead'
                      THEN 'max attempts (' || c.max_attempts || ') reached; last: ' || c.reason
                      ELSE c.reason END,
        errors = coalesce(j.errors, '[]'::jsonb)
                 || jsonb_build_array(jsonb_build_object('attempt', c.attempt, 'reason', c.reason)),
        run_after = CASE WHEN c.next_state = 'pending'
                         THEN now() + make_interval(secs => c.delay) ELSE j.run_after END,
        lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
        finished_at = CASE WHEN c.next_state = 'pending' THEN NULL ELSE now() END,
        updated_at = now()
    FROM current c
    WHERE j.id = c.id
    RETURNING j.id, j.state, j.attempt, j.reason
), events AS (
    INSERT INTO job_events (job_id, actor, from_state, to_state, attempt, reason)
    SELECT id, %(actor)s, %(from_state)s, state, attempt, reason FROM done
)
SELECT id, state FROM done
"""

# Free every expired lease. A `claimed` job (a builder died before putting it in a batch) never reached a
# provider: back to pending with its attempt given back, never dead. A `running` job's worker died during
# its call, which the provider may have answered: the attempt stays spent (dead once all are spent), and
# the reason says which.
SWEEP_EXPIRED_LEASES = """
WITH expired AS MATERIALIZED (
    SELECT id, state AS from_state, attempt, max_attempts
    FROM jobs
    WHERE state IN ('claimed', 'running') AND lease_expires_at < now()
    ORDER BY lease_expires_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), next AS (
    SELECT id, from_state, max_attempts,
           CASE WHEN from_state = 'claimed' THEN greatest(attempt - 1, 0) ELSE attempt END AS attempt,
           CASE WHEN from_state = 'claimed' THEN 'lease expired before submission (attempt given back)'
                ELSE 'lease expired while running (the worker died during its provider call)' END AS why,
           from_state <> 'claimed' AND attempt >= max_attempts AS spent
    FROM expired
), done AS (
    UPDATE jobs j
    SET state = CASE WHEN n.spent THEN 'dead' ELSE 'pending' END,
        attempt = n.attempt,
        reason = CASE WHEN n.spent THEN 'max attempts (' || n.max_attempts || ') reached; last: ' || n.why
                      ELSE n.why END,
        errors = coalesce(j.errors, '[]'::jsonb)
                 || jsonb_build_array(jsonb_build_object('attempt', j.attempt, 'reason', n.why)),
        run_after = now(),
        lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
        finished_at = CASE WHEN n.spent THEN now() ELSE NULL END,
        updated_at = now()
    FROM next n
    WHERE j.id = n.id
    RETURNING j.id, j.state, j.attempt, j.reason, n.from_state
), events AS (
    INSERT INTO job_events (job_id, actor, from_state, to_state, attempt, reason)
    SELECT id, %(actor)s, from_state, state, attempt, reason FROM done
)
SELECT id, state, reason FROM done
"""

# Intake: rows are COPYed into a temporary table, then inserted, already reviewed (Forge checked them);
# a duplicate (source, external_id) is skipped here and reported by the caller as rejected.
CREATE_STAGING = """
CREATE TEMP TABLE intake_staging (
    seq bigint, source text, external_id text, processor text, processor_version text, mode text,
    payload jsonb, max_attempts integer, callback_url text, due_at timestamptz
) ON COMMIT DROP
"""

COPY_STAGING = """
COPY intake_staging (seq, source, external_id, processor, processor_version, mode, payload, max_attempts,
                     callback_url, due_at) FROM STDIN
"""

# Used between rows when a batch falls back to one row at a time.
CLEAR_STAGING = "TRUNCATE intake_staging"

INSERT_FROM_STAGING = """
WITH inserted AS (
    INSERT INTO jobs (source, external_id, processor, processor_version, mode, payload, max_attempts, callback_url,
                      due_at, reviewed)
    SELECT source, external_id, processor, processor_version, mode, payload, max_attempts, callback_url, due_at, true
    FROM intake_staging
    ORDER BY seq
    ON CONFLICT (source, external_id) DO NOTHING
    RETURNING id, source, external_id
), events AS (
    INSERT INTO job_events (job_id, actor, from_state, to_state, attempt, reason)
    SELECT id, %(actor)s, NULL, 'pending', 0, 'enqueued' FROM inserted
)
SELECT s.seq, CASE WHEN s.nth = 1 THEN i.id END AS id
FROM (
    SELECT seq, source, external_id,
           row_number() OVER (PARTITION BY source, external_id ORDER BY seq) AS nth
    FROM intake_staging
) s
LEFT JOIN inserted i ON i.source = s.source AND i.external_id = s.external_id
ORDER BY s.seq
"""

COUNT_JOBS_BY_STATE = "SELECT state, count(*) FROM jobs GROUP BY state"

COUNT_SOURCE_JOBS_BY_STATE = "SELECT state, count(*) FROM jobs WHERE source = %(source)s GROUP BY state"

SOURCE_COST = """
SELECT coalesce(sum(c.cost_usd), 0) FROM costs c JOIN jobs j ON j.id = c.job_id WHERE j.source = %(source)s
"""

COUNT_BATCHES_SINCE = """
SELECT state, count(*) FROM batches WHERE created_at >= %(since)s GROUP BY state
"""

COUNT_OPEN_JOBS = """
SELECT count(*) FROM jobs WHERE mode = %(mode)s AND state IN ('pending', 'claimed', 'running')
  AND (%(pins)s::text[] IS NULL OR processor || ' ' || processor_version = ANY (%(pins)s::text[]))
"""

COUNT_BATCHES_BY_STATE = "SELECT state, count(*) FROM batches GROUP BY state"

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

# Rows another application inserted straight into jobs are not reviewed (the column's default): intake
# checks each against the processor registry (pinning its version and resolving its mode) before any
# claim may take it, whatever version the row names.
UNREVIEWED_JOBS = """
SELECT id, processor, processor_version, mode, payload, due_at, callback_url FROM jobs
WHERE NOT reviewed AND state = 'pending'
ORDER BY id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""

ACCEPT_REVIEWED = """
WITH done AS (
    UPDATE jobs j SET processor_version = t.version, mode = t.mode, reviewed = true, updated_at = now()
    FROM unnest(%(ids)s::bigint[], %(versions)s::text[], %(modes)s::text[]) AS t(id, version, mode)
    WHERE j.id = t.id AND j.state = 'pending' AND NOT j.reviewed
    RETURNING j.id, j.attempt, j.processor, j.processor_version, j.mode
)
INSERT INTO job_events (job_id, actor, from_state, to_state, attempt, reason)
SELECT id, %(actor)s, 'pending', 'pending', attempt,
       'reviewed: ' || processor || ' ' || processor_version || ', mode ' || mode
FROM done
"""

# A refused row fails with its reason. Its stamp goes only to a callback URL the relay can deliver to
# (an unusable one would be retried forever), and not to one intake refused (`drop_callback`).
REFUSE_REVIEWED = """
WITH done AS (
    UPDATE jobs j SET state = 'failed', reason = t.reason, reviewed = true, finished_at = now(), updated_at = now(),
                      callback_url = CASE WHEN NOT t.drop_callback AND j.callback_url ~* '^https?://[^/?#[:space:]]+'
                                          THEN j.callback_url END
    FROM unnest(%(ids)s::bigint[], %(reasons)s::text[], %(drop_callback)s::boolean[]) AS t(id, reason, drop_callback)
    WHERE j.id = t.id AND j.state = 'pending' AND NOT j.reviewed
    RETURNING j.id, j.attempt, j.reason
)
INSERT INTO job_events (job_id, actor, from_state, to_state, attempt, reason)
SELECT id, %(actor)s, 'pending', 'failed', attempt, reason FROM done
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
