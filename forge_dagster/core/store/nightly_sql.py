"""SQL the nightly chain reads from Forge's own tables (job outcomes, queues, costs), and writes for
briefings and self-healing attempts."""

# Jobs that reached a terminal state in the window, by processor and state.
OUTCOMES_BY_STATE = """
SELECT processor, state, count(*) FROM jobs
WHERE finished_at >= %(since)s AND state IN ('succeeded', 'invalid', 'failed', 'dead', 'cancelled')
GROUP BY processor, state ORDER BY processor, state
"""

TOP_FAILURE_REASONS = """
SELECT state, coalesce(left(reason, 160), '(no reason given)') AS reason, count(*) AS n FROM jobs
WHERE finished_at >= %(since)s AND state IN ('invalid', 'failed', 'dead')
GROUP BY state, reason ORDER BY n DESC, reason LIMIT %(limit)s
"""

# Retryable outcomes that sent a job back to pending (from the append-only audit).
RETRIES_SINCE = """
SELECT count(*) FROM job_events
WHERE at >= %(since)s AND to_state = 'pending' AND from_state IS NOT NULL AND from_state <> 'pending'
"""

COSTS_BY_MODEL = """
SELECT provider, model, count(*), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0),
       coalesce(sum(cost_usd), 0)
FROM costs WHERE booked_at >= %(since)s
GROUP BY provider, model ORDER BY coalesce(sum(cost_usd), 0) DESC, provider, model
"""

BATCHES_ENDED_BADLY = """
SELECT state, count(*) FROM batches
WHERE ended_at >= %(since)s AND state IN ('ended_failed', 'ended_expired', 'ended_cancelled')
GROUP BY state ORDER BY state
"""

QUEUE_DEPTHS = """
SELECT mode, count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)
FROM jobs WHERE state = 'pending' GROUP BY mode ORDER BY mode
"""

INSERT_BRIEFING = """
INSERT INTO briefings (night, level, markdown) VALUES (%(night)s, %(level)s, %(markdown)s)
ON CONFLICT (night) DO NOTHING
RETURNING night
"""

UPDATE_BRIEFING = """
UPDATE briefings SET level = %(level)s, markdown = %(markdown)s, updated_at = now() WHERE night = %(night)s
"""

GET_BRIEFING = "SELECT night, level, markdown, created_at, updated_at FROM briefings WHERE night = %(night)s"

# One healer at a time per signal: the decision (count, cooldown) and its record commit together.
LOCK_SIGNAL = "SELECT pg_advisory_xact_lock(hashtext('forge.healing'), hashtext(%(signal)s))"

# A remedy still `running` long after it started died with its process (a sensor tick killed, a code
# server restarted): it stays counted as an attempt, and now says it was interrupted.
MARK_INTERRUPTED = """
UPDATE healing_attempts SET outcome = 'interrupted', detail = 'no outcome recorded: the process running the '
                                                              || 'remedy stopped before it finished'
WHERE signal = %(signal)s AND action = 'remedy' AND outcome = 'running'
  AND at < now() - make_interval(secs => %(after_s)s)
"""

HEALING_WINDOW = """
SELECT count(*) FILTER (WHERE action = 'remedy'),
       extract(epoch FROM now() - max(at) FILTER (WHERE action = 'remedy')),
       count(*) FILTER (WHERE action = 'gave_up')
FROM healing_attempts
WHERE signal = %(signal)s AND at >= now() - make_interval(secs => %(window_s)s)
"""

INSERT_HEALING = """
INSERT INTO healing_attempts (signal, run_id, action, outcome, detail)
VALUES (%(signal)s, %(run_id)s, %(action)s, %(outcome)s, %(detail)s)
RETURNING id
"""

FINISH_HEALING = "UPDATE healing_attempts SET outcome = %(outcome)s, detail = %(detail)s WHERE id = %(id)s"

HEALING_HISTORY = """
SELECT id, signal, run_id, action, outcome, detail, at FROM healing_attempts
WHERE %(signal)s::text IS NULL OR signal = %(signal)s ORDER BY id
"""

# The briefing's first version: stored with the digest of what Slack is told (level and failures).
INSERT_SENT_BRIEFING = """
INSERT INTO briefings (night, level, markdown, sent_digest) VALUES (%(night)s, %(level)s, %(markdown)s, %(digest)s)
ON CONFLICT (night) DO NOTHING
RETURNING night
"""

# A re-run's briefing: the row is locked so two re-runs cannot both decide to post a correction.
LOCK_BRIEFING = "SELECT sent_digest, sent_versions FROM briefings WHERE night = %(night)s FOR UPDATE"

CORRECT_BRIEFING = """
UPDATE briefings SET level = %(level)s, markdown = %(markdown)s, sent_digest = %(digest)s,
       sent_versions = sent_versions + 1, updated_at = now()
WHERE night = %(night)s
RETURNING sent_versions
"""

# A briefing stored before digests were kept: remember the digest, post nothing.
ADOPT_BRIEFING_DIGEST = """
UPDATE briefings SET level = %(level)s, markdown = %(markdown)s, sent_digest = coalesce(sent_digest, %(digest)s),
       updated_at = now()
WHERE night = %(night)s
"""

SKIP_STEP = """
INSERT INTO nightly_skips (night, step, reason) VALUES (%(night)s, %(step)s, %(reason)s)
ON CONFLICT (night, step) DO UPDATE SET reason = EXCLUDED.reason, recorded_at = now()
"""

# A step is either skipped or has an output for a night: recording one forgets the other.
FORGET_STEP_OUTPUT = "DELETE FROM nightly_steps WHERE night = %(night)s AND step = %(step)s"
FORGET_STEP_SKIP = "DELETE FROM nightly_skips WHERE night = %(night)s AND step = %(step)s"

NIGHT_SKIPS = "SELECT step, reason, recorded_at FROM nightly_skips WHERE night = %(night)s ORDER BY recorded_at, step"

# Night keys are ISO dates, so text order is date order.
STEPS_BETWEEN = """
SELECT night, step, output FROM nightly_steps
WHERE night >= %(first)s AND night <= %(last)s AND step = ANY(%(steps)s::text[])
ORDER BY night, step
"""

CLAIM_NOTICE = """
INSERT INTO nightly_notices (key, topic, night, text) VALUES (%(key)s, %(topic)s, %(night)s, %(text)s)
ON CONFLICT (key) DO NOTHING
RETURNING key
"""

NIGHT_NOTICES = "SELECT topic, text FROM nightly_notices WHERE night = %(night)s ORDER BY sent_at, key"
