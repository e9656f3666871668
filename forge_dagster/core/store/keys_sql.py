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
