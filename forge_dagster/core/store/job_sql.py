"""Every statement that changes the jobs table, one named statement per transition (the other store
modules call these; reads are in job_read_sql.py, intake's COPY in intake_sql.py).

Every statement that changes a leased job is fenced: it matches on `id`, `lease_token` and the leased
state, so a worker whose lease was taken over updates nothing. Every transition writes its job_events
row in the same statement (a data-modifying CTE), so the audit cannot drift from the table. Kept in one
module, past the usual size, so the fence of every transition can be read and audited in one place.
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

# Leased jobs go back to pending without spending their attempt: the provider never ran them (every
# key paused, or the realtime worker stopping). Fenced like every other transition.
RELEASE_JOBS = """
WITH input AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(tokens)s::uuid[], %(reasons)s::text[], %(delays)s::float8[])
        AS t(id, token, reason, delay)
), done AS (
    UPDATE jobs j
    SET state = 'pending', attempt = greatest(j.attempt - 1, 0), reason = i.reason,
        run_after = now() + make_interval(secs => i.delay),
        lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = now()
    FROM input i
    WHERE j.id = i.id AND j.lease_token = i.token AND j.state = %(from_state)s
    RETURNING j.id, j.attempt, j.reason
), events AS (
    INSERT INTO job_events (job_id, actor, from_state, to_state, attempt, reason)
    SELECT id, %(actor)s, %(from_state)s, 'pending', attempt, reason FROM done
)
SELECT id FROM done
"""

# The provider never ran the batch (every key refused it for quota, or it failed for the model's
# enqueued-token limit): its jobs go back to pending without spending their attempt. Callers run this in
# the transaction that moved the batch itself, so the jobs of one batch are requeued once.
REQUEUE_BATCH_UNSPENT = """
WITH done AS (
    UPDATE jobs j
    SET state = 'pending', attempt = greatest(j.attempt - 1, 0), reason = %(reason)s,
        run_after = now() + make_interval(secs => %(delay)s), batch_id = NULL, finished_at = NULL,
        updated_at = now()
    WHERE j.batch_id = %(batch_id)s AND j.state = 'submitted'
    RETURNING j.id, j.attempt
), events AS (
    INSERT INTO job_events (job_id, actor, from_state, to_state, attempt, reason)
    SELECT id, %(actor)s, 'submitted', 'pending', attempt, %(reason)s FROM done
)
SELECT count(*) FROM done
"""

# Usage, raw text and booked cost on jobs this worker just settled (called in the same transaction as
# the fenced transition, for the ids it returned).
NOTE_JOB_USAGE = """
UPDATE jobs j
SET usage = t.usage, raw_output = coalesce(t.raw_output, j.raw_output),
    cost_usd = coalesce(j.cost_usd, 0) + coalesce(t.booked, 0)
FROM unnest(%(ids)s::bigint[], %(usages)s::jsonb[], %(raw_outputs)s::text[], %(booked)s::numeric[])
    AS t(id, usage, raw_output, booked)
WHERE j.id = t.id
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
                       output_tokens, reasoning_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cost_usd,
                       pricing_version, batch_priced)
    SELECT d.id, d.attempt, %(batch_id)s, %(provider)s, %(model)s, %(processor)s,
           coalesce((d.usage ->> 'input_tokens')::int, 0), coalesce((d.usage ->> 'cached_input_tokens')::int, 0),
           coalesce((d.usage ->> 'output_tokens')::int, 0), coalesce((d.usage ->> 'reasoning_tokens')::int, 0),
           coalesce((d.usage ->> 'cache_write_5m_tokens')::int, 0),
           coalesce((d.usage ->> 'cache_write_1h_tokens')::int, 0),
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

# Jobs a dead run's processes had claimed for a batch and not yet put into one: the provider was never
# asked, so they go back to pending with their attempt given back.
RELEASE_DEAD_RUN_CLAIMS = """
WITH done AS (
    UPDATE jobs j
    SET state = 'pending', attempt = greatest(j.attempt - 1, 0), reason = %(reason)s, run_after = now(),
        lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = now()
    WHERE j.state = 'claimed' AND j.lease_owner = ANY(%(owners)s::text[])
    RETURNING j.id, j.attempt
), events AS (
    INSERT INTO job_events (job_id, actor, from_state, to_state, attempt, reason)
    SELECT id, %(actor)s, 'claimed', 'pending', attempt, %(reason)s FROM done
)
SELECT count(*) FROM done
"""

# An operator cancels open jobs: each ends `cancelled` with the operator's reason and its lease cleared, so
# the worker holding it updates nothing (its token no longer matches) and a late batch result is not
# settled (the job is no longer submitted or collected). A job a worker finished first is not open any more
# when its row lock is granted: it is left alone and reported as already finished.
CANCEL_JOBS = """
WITH current AS (
    SELECT j.id, j.state AS from_state FROM jobs j
    WHERE j.id = ANY(%(ids)s::bigint[]) AND j.state IN ('pending', 'claimed', 'running', 'submitted', 'collected')
    FOR UPDATE OF j
), moved AS (
    UPDATE jobs j
    SET state = 'cancelled', reason = %(reason)s, lease_owner = NULL, lease_token = NULL,
        lease_expires_at = NULL, finished_at = now(), updated_at = now()
    FROM current c WHERE j.id = c.id
    RETURNING j.id, j.attempt, c.from_state
), events AS (
    INSERT INTO job_events (job_id, actor, from_state, to_state, attempt, reason)
    SELECT id, %(actor)s, from_state, 'cancelled', attempt, %(reason)s FROM moved
)
SELECT id, from_state FROM moved
"""

# An operator retries jobs that ended without success: back to pending at once with a fresh attempt budget
# (max_attempts moves to attempt + budget; attempts keep counting, so each keeps its own ledger row), out of
# any batch, pinned to `version` (and its `mode`) when given. A job that is not in such a state when its
# row lock is granted is left alone.
RETRY_JOBS = """
WITH current AS (
    SELECT j.id, j.state AS from_state FROM jobs j
    WHERE j.id = ANY(%(ids)s::bigint[]) AND j.state IN ('dead', 'invalid', 'failed', 'cancelled')
    FOR UPDATE OF j
), moved AS (
    UPDATE jobs j
    SET state = 'pending', reason = %(reason)s,
        attempt_budget = coalesce(%(budget)s, j.attempt_budget, j.max_attempts),
        max_attempts = j.attempt + coalesce(%(budget)s, j.attempt_budget, j.max_attempts),
        processor_version = coalesce(%(version)s, j.processor_version), mode = coalesce(%(mode)s, j.mode),
        run_after = now(), batch_id = NULL, custom_id = NULL, lease_owner = NULL, lease_token = NULL,
        lease_expires_at = NULL, finished_at = NULL, updated_at = now()
    FROM current c WHERE j.id = c.id
    RETURNING j.id, j.attempt, c.from_state
), events AS (
    INSERT INTO job_events (job_id, actor, from_state, to_state, attempt, reason)
    SELECT id, %(actor)s, from_state, 'pending', attempt, %(reason)s FROM moved
)
SELECT id, from_state FROM moved
"""

# An operator cancelled a batch and asked for the jobs the provider did not finish to be requeued: back to
# pending at once with the attempt this batch took given back (the provider never ran them), out of the
# batch. Guarded like every settlement by (batch, custom_id, collected), so it moves each job once.
REQUEUE_UNFINISHED_UNSPENT = """
WITH done AS (
    UPDATE jobs j
    SET state = 'pending', attempt = greatest(j.attempt - 1, 0), reason = %(reason)s, run_after = now(),
        batch_id = NULL, finished_at = NULL, updated_at = now()
    WHERE j.id = ANY(%(ids)s::bigint[]) AND j.batch_id = %(batch_id)s AND j.state = 'collected'
    RETURNING j.id, j.attempt
), events AS (
    INSERT INTO job_events (job_id, actor, from_state, to_state, attempt, reason)
    SELECT id, %(actor)s, 'collected', 'pending', attempt, %(reason)s FROM done
)
SELECT id FROM done
"""
