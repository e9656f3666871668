"""SQL for provider keys, provider outages, batch submission holds, the key each batch goes out with, and
the statements that return jobs without spending an attempt (realtime release, a batch the provider never
ran) or book realtime usage and cost, one named statement per operation.

Key rows hold an alias, a masked form and a sha256 prefix, never the key. Statements that change a
leased job are fenced by `lease_token` and state, as everywhere in the store.
"""

# Register a key (from the environment) or refresh it. A new fingerprint under a known alias is a
# rotated key: it starts active with a clean pause history.
UPSERT_KEY = """
INSERT INTO provider_keys (provider, alias, masked, fingerprint)
VALUES (%(provider)s, %(alias)s, %(masked)s, %(fingerprint)s)
ON CONFLICT (provider, alias) DO UPDATE
SET masked = EXCLUDED.masked,
    fingerprint = EXCLUDED.fingerprint,
    state = CASE WHEN provider_keys.fingerprint = EXCLUDED.fingerprint THEN provider_keys.state ELSE 'active' END,
    reason = CASE WHEN provider_keys.fingerprint = EXCLUDED.fingerprint THEN provider_keys.reason END,
    paused_at = CASE WHEN provider_keys.fingerprint = EXCLUDED.fingerprint THEN provider_keys.paused_at END,
    paused_until = CASE WHEN provider_keys.fingerprint = EXCLUDED.fingerprint
                        THEN provider_keys.paused_until END,
    probe_count = CASE WHEN provider_keys.fingerprint = EXCLUDED.fingerprint
                       THEN provider_keys.probe_count ELSE 0 END,
    updated_at = now()
RETURNING state
"""

KEY_COLUMNS = """provider, alias, masked, fingerprint, state, reason, paused_at, paused_until, probe_count,
last_probe_at, last_probe_error, updated_at"""

LIST_KEYS = f"SELECT {KEY_COLUMNS} FROM provider_keys ORDER BY provider, alias"

GET_KEY = f"SELECT {KEY_COLUMNS} FROM provider_keys WHERE provider = %(provider)s AND alias = %(alias)s"

# Pausing takes the provider's key rows in one order first, so two keys paused at the same moment
# cannot both believe the other is still active (and the outage would go untold).
LOCK_PROVIDER_KEYS = """
SELECT alias FROM provider_keys WHERE provider = %(provider)s ORDER BY alias FOR UPDATE
"""

# Pause an active key until its next probe: base * 2^probe_count seconds, capped, and never before
# `min_s` (a retry-after the provider gave). Only the active -> paused transition returns a row.
PAUSE_KEY = """
UPDATE provider_keys
SET state = 'paused', reason = %(reason)s,
    paused_at = coalesce(paused_at, now()),
    paused_until = now() + make_interval(secs => greatest(%(min_s)s,
                                                          least(%(cap_s)s, %(base_s)s * power(2, probe_count)))),
    updated_at = now()
WHERE provider = %(provider)s AND alias = %(alias)s AND state = 'active'
RETURNING probe_count, paused_until
"""

COUNT_ACTIVE_KEYS = """
SELECT count(*) FROM provider_keys WHERE provider = %(provider)s AND state = 'active'
"""

START_OUTAGE = """
INSERT INTO provider_outages (provider, reason) VALUES (%(provider)s, %(reason)s)
ON CONFLICT (provider) DO NOTHING
RETURNING since
"""

END_OUTAGE = "DELETE FROM provider_outages WHERE provider = %(provider)s RETURNING since"

LIST_OUTAGES = "SELECT provider, since, reason FROM provider_outages ORDER BY provider"

# Claim paused keys whose probe is due. Pushing paused_until forward by the probe's time budget is the
# claim: a sensor and a worker probing at the same moment never probe one key twice.
CLAIM_DUE_PROBES = """
WITH due AS MATERIALIZED (
    SELECT provider, alias FROM provider_keys
    WHERE state = 'paused' AND paused_until <= now()
    ORDER BY paused_until
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE provider_keys k
SET paused_until = now() + make_interval(secs => %(budget_s)s), last_probe_at = now(), updated_at = now()
FROM due d
WHERE k.provider = d.provider AND k.alias = d.alias
RETURNING k.provider, k.alias, k.probe_count, k.reason
"""

# The probe answered: the key is back in service. probe_count stays raised until a real call succeeds
# (CONFIRM_KEY), so a key that relapses at once is paused for longer next time.
RESUME_KEY = """
UPDATE provider_keys
SET state = 'active', paused_until = NULL, probe_count = probe_count + 1, last_probe_error = NULL,
    updated_at = now()
WHERE provider = %(provider)s AND alias = %(alias)s AND state = 'paused'
RETURNING probe_count, reason
"""

PROBE_FAILED = """
UPDATE provider_keys
SET probe_count = probe_count + 1, last_probe_error = %(error)s,
    paused_until = now() + make_interval(secs => least(%(cap_s)s, %(base_s)s * power(2, probe_count + 1))),
    updated_at = now()
WHERE provider = %(provider)s AND alias = %(alias)s AND state = 'paused'
RETURNING probe_count, paused_until
"""

# A real call succeeded on the key: the pause episode is over.
CONFIRM_KEY = """
UPDATE provider_keys
SET probe_count = 0, reason = NULL, paused_at = NULL, updated_at = now()
WHERE provider = %(provider)s AND alias = %(alias)s AND state = 'active'
  AND (probe_count > 0 OR paused_at IS NOT NULL)
RETURNING probe_count
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

# One ledger row per (job, attempt) the provider billed, at realtime (non-batch) prices; NULL cost when the
# model has no price (every BilledAttempt used tokens).
BOOK_REALTIME_COSTS = """
INSERT INTO costs (job_id, attempt, batch_id, provider, model, processor, input_tokens, cached_input_tokens,
                   output_tokens, reasoning_tokens, cost_usd, pricing_version, batch_priced)
SELECT t.id, t.attempt, NULL, t.provider, t.model, t.processor,
       coalesce((t.usage ->> 'input_tokens')::int, 0), coalesce((t.usage ->> 'cached_input_tokens')::int, 0),
       coalesce((t.usage ->> 'output_tokens')::int, 0), coalesce((t.usage ->> 'reasoning_tokens')::int, 0),
       t.cost, %(pricing_version)s, false
FROM unnest(%(ids)s::bigint[], %(attempts)s::int[], %(providers)s::text[], %(models)s::text[],
            %(processors)s::text[], %(usages)s::jsonb[], %(costs)s::numeric[])
    AS t(id, attempt, provider, model, processor, usage, cost)
ON CONFLICT (job_id, attempt) DO NOTHING
RETURNING job_id, cost_usd
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

HOLD_SUBMISSIONS = """
INSERT INTO submission_holds (provider, model, reason, in_flight_batches)
SELECT %(provider)s, %(model)s, %(reason)s, count(*)
FROM batches b
WHERE b.provider = %(provider)s AND b.model = %(model)s AND b.state IN ('submitting', 'in_progress', 'cancelling')
ON CONFLICT (provider, model) DO NOTHING
RETURNING in_flight_batches
"""

LIST_HOLDS = "SELECT provider, model, reason, in_flight_batches, held_at FROM submission_holds ORDER BY 1, 2"

# A hold ends once the model has no batch in flight left: its enqueued tokens have drained.
RELEASE_DRAINED_HOLDS = """
DELETE FROM submission_holds h
WHERE NOT EXISTS (
    SELECT 1 FROM batches b
    WHERE b.provider = h.provider AND b.model = h.model AND b.state IN ('submitting', 'in_progress', 'cancelling')
)
RETURNING provider, model, held_at
"""

# -- batches and their keys ----------------------------------------------------------------------
# The key a batch goes out with, written before each create call so that a resumed submission, the
# status poll and the results download use the same key.
SET_BATCH_KEY = "UPDATE batches SET key_alias = %(alias)s WHERE id = %(batch_id)s AND state = 'submitting'"

BATCH_KEYS = "SELECT id, key_alias FROM batches WHERE id = ANY(%(ids)s::bigint[])"

IN_FLIGHT_BATCHES = """
SELECT count(*) FROM batches
WHERE provider = %(provider)s AND model = %(model)s AND state IN ('submitting', 'in_progress', 'cancelling')
"""

# Other batches of the same model that were in flight (as far as we knew) when this one was submitted:
# the tokens they had enqueued explain a refusal for the model's enqueued-token limit.
IN_FLIGHT_BESIDE = """
SELECT count(*)
FROM batches b JOIN batches o ON o.provider = b.provider AND o.model = b.model AND o.id <> b.id
WHERE b.id = %(batch_id)s AND o.submitted_at IS NOT NULL AND o.submitted_at <= b.submitted_at
  AND (o.ended_at IS NULL OR o.ended_at >= b.submitted_at)
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
