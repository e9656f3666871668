"""SQL for the pacing of provider keys shared by every worker process (table `key_pacing`, migration 008).

GCRA, as `core/providers/ratelimit.py` runs it for one process, but on the key's row and the database clock: each
reservation is one UPDATE that locks the row, applies what the caller reports, takes the next n slots and
returns when the first is due and how far apart the others are. Times are epoch seconds.
"""

# The key's row, once (a new key starts with no schedule: its first slot is now).
ENSURE_KEY_PACING = """
INSERT INTO key_pacing (provider, fingerprint, rpm, tpm)
VALUES (%(provider)s, %(fingerprint)s, %(rpm)s, %(tpm)s)
ON CONFLICT (provider, fingerprint) DO NOTHING
"""

# Reserve the next `n` slots for calls of `tokens` each (a block: one statement for the next n calls of this
# process). The caller reports its view of the limits (NULL: it knows none, use the row's), a token
# `correction` for its earlier calls (what the provider counted minus what was estimated) and `void` (its
# limits changed: reservations made before are void, the schedule starts afresh from now or the end of a
# block, with no burst). `headroom` and `burst_s` are the limiter's.
# The CTE locks the row (FOR UPDATE returns its latest version after any wait), so concurrent
# reservations queue on the row and each sees the previous one's schedule. The block's slots are `step`
# apart, step = max(request interval, tokens x token interval), which is never closer than n reservations
# one by one would be, so a block admits no more than single slots would; with n = 1 it is the single
# GCRA step. Returns the first slot's time, the step, the database's time when they were taken (the caller
# maps the database clock onto its own) and the schedule as left (to give unused slots back).
RESERVE_SLOTS = """
WITH cur AS MATERIALIZED (
    SELECT k.provider, k.fingerprint, k.tat_r, k.tat_t, k.blocked_until,
           coalesce(%(rpm)s::int, k.rpm) AS rpm, coalesce(%(tpm)s::int, k.tpm) AS tpm,
           extract(epoch FROM clock_timestamp())::float8 AS now
    FROM key_pacing k
    WHERE k.provider = %(provider)s AND k.fingerprint = %(fingerprint)s
    FOR UPDATE
), pace AS (
    SELECT cur.*,
           CASE WHEN rpm > 0 THEN 60.0 / (rpm * %(headroom)s::float8) ELSE 0 END AS ir,
           CASE WHEN tpm > 0 THEN 60.0 / (tpm * %(headroom)s::float8) ELSE 0 END AS it,
           greatest(now, blocked_until) AS start
    FROM cur
), base AS (
    SELECT pace.*,
           greatest(0, %(burst_s)s::float8 - ir) AS tau_r,
           %(burst_s)s::float8 AS tau_t,
           greatest(ir, %(tokens)s::float8 * it) AS step,
           CASE WHEN %(void)s::bool OR tat_r IS NULL THEN start + greatest(0, %(burst_s)s::float8 - ir)
                ELSE tat_r END AS tr,
           CASE WHEN %(void)s::bool OR tat_t IS NULL THEN start + %(burst_s)s::float8
                ELSE tat_t + %(correction)s::float8 * it END AS tt
    FROM pace
), slot AS (
    SELECT base.*,
           greatest(start, CASE WHEN ir > 0 THEN tr - tau_r ELSE start END,
                           CASE WHEN it > 0 THEN tt - tau_t ELSE start END) AS admit
    FROM base
)
UPDATE key_pacing k
SET rpm = s.rpm, tpm = s.tpm,
    tat_r = CASE WHEN s.ir > 0 THEN greatest(s.tr, s.admit) + s.ir + (%(n)s - 1) * s.step END,
    tat_t = CASE WHEN s.it > 0 THEN greatest(s.tt, s.admit) + %(tokens)s::float8 * s.it + (%(n)s - 1) * s.step END,
    last_admit = s.admit + (%(n)s - 1) * s.step,
    generation = k.generation + (%(void)s::bool)::int,
    updated_at = now()
FROM slot s
WHERE k.provider = s.provider AND k.fingerprint = s.fingerprint
RETURNING s.admit, s.step, s.now, k.rpm, k.tpm, k.generation, k.tat_r, k.tat_t
"""

# Give back the last `slots` of a block that no call used: only when the schedule is still as that block
# left it (same generation and times: no reservation came after it), so what is given back was never
# handed to anyone; otherwise nothing changes and those slots pass unused.
RETURN_SLOTS = """
UPDATE key_pacing
SET tat_r = tat_r - %(slots)s * %(step)s::float8, tat_t = tat_t - %(slots)s * %(step)s::float8,
    last_admit = last_admit - %(slots)s * %(step)s::float8, updated_at = now()
WHERE provider = %(provider)s AND fingerprint = %(fingerprint)s AND generation = %(generation)s
  AND tat_r IS NOT DISTINCT FROM %(tat_r)s::float8 AND tat_t IS NOT DISTINCT FROM %(tat_t)s::float8
"""

# A 429 (or exhausted headers): no process calls with the key until `seconds` from now; reservations
# made before are void (the generation tells the other processes so).
BLOCK_KEY = """
UPDATE key_pacing
SET blocked_until = greatest(blocked_until, extract(epoch FROM clock_timestamp()) + %(seconds)s::float8),
    tat_r = NULL, tat_t = NULL, generation = generation + 1, updated_at = now()
WHERE provider = %(provider)s AND fingerprint = %(fingerprint)s
RETURNING generation
"""
