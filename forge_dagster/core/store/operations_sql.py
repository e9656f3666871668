"""SQL for operating Forge: the metrics snapshot and the operator's view."""

# Latest outbox event per provider key (key.paused / key.resumed / provider.all_keys_paused), for the
# operator's view of credentials.
LATEST_KEY_EVENTS = """
SELECT DISTINCT ON (key) key, topic, payload, created_at
FROM (SELECT key, topic, payload, created_at, id FROM outbox WHERE topic LIKE 'key.%%' OR topic LIKE 'provider.%%'
      UNION ALL
      SELECT key, topic, row -> 'payload', (row ->> 'created_at')::timestamptz, id FROM outbox_archive
      WHERE topic LIKE 'key.%%' OR topic LIKE 'provider.%%') e
ORDER BY key, id DESC
"""

# -- metrics (computed from the tables at scrape time, so every process's work is counted) ---------
JOBS_BY_STATE_ALL = """
SELECT state, count(*) FROM jobs GROUP BY state
UNION ALL
SELECT state, count(*) FROM jobs_archive GROUP BY state
"""

# Claims and takeovers from the append-only audit (never archived, so these only grow).
CLAIM_EVENTS = """
SELECT count(*) FILTER (WHERE to_state IN ('claimed', 'running')),
       count(*) FILTER (WHERE reason LIKE 'reclaimed: lease expired%%'),
       count(*) FILTER (WHERE actor = 'sweeper' AND from_state IN ('claimed', 'running'))
FROM job_events
"""

# Provider answers by class of outcome: ok, requeue (expired/cancelled/missing) or the error class.
PROVIDER_OUTCOMES = """
SELECT b.provider, CASE WHEN r.outcome = 'succeeded' THEN 'ok' WHEN r.outcome = 'requeue' THEN 'requeue'
                        ELSE coalesce(r.error_class, 'error') END AS outcome, count(*)
FROM batch_results r JOIN batches b ON b.id = r.batch_id
GROUP BY 1, 2
UNION ALL
SELECT a.provider, CASE WHEN r.row ->> 'outcome' = 'succeeded' THEN 'ok'
                        WHEN r.row ->> 'outcome' = 'requeue' THEN 'requeue'
                        ELSE coalesce(r.row ->> 'error_class', 'error') END, count(*)
FROM batch_results_archive r JOIN batches_archive a ON a.id = r.batch_id
GROUP BY 1, 2
"""

# Realtime provider calls by class of outcome, counted as each flush of outcomes is written.
PROVIDER_CALLS = "SELECT provider, outcome, calls FROM provider_call_counts"

# Add one flush's calls. The caller sorts the rows, so two flushes never lock them in opposite orders.
ADD_PROVIDER_CALLS = """
INSERT INTO provider_call_counts AS c (provider, outcome, calls)
SELECT * FROM unnest(%(providers)s::text[], %(outcomes)s::text[], %(calls)s::bigint[])
ON CONFLICT (provider, outcome) DO UPDATE SET calls = c.calls + excluded.calls, updated_at = now()
"""

COST_AND_TOKENS = """
SELECT provider, model, sum(input_tokens), sum(cached_input_tokens), sum(output_tokens), sum(reasoning_tokens),
       coalesce(sum(cost_usd), 0), count(*)
FROM costs GROUP BY provider, model ORDER BY provider, model
"""

COST_SINCE = "SELECT coalesce(sum(cost_usd), 0) FROM costs WHERE booked_at >= now() - make_interval(secs => %(s)s)"

BATCHES_BY_STATE_ALL = """
SELECT state, count(*) FROM batches GROUP BY state
UNION ALL
SELECT 'archived', count(*) FROM batches_archive HAVING count(*) > 0
"""

# Age of the oldest batch still open (not yet collected), per provider.
OLDEST_OPEN_BATCH = """
SELECT provider, extract(epoch FROM now() - min(coalesce(submitted_at, created_at)))
FROM batches WHERE state NOT IN ('collected', 'archived') GROUP BY provider
"""

OPEN_BATCHES_VIEW = """
SELECT id, provider, model, processor, state, request_count,
       round(extract(epoch FROM now() - coalesce(submitted_at, created_at)))::bigint AS age_s
FROM batches WHERE state NOT IN ('collected', 'archived') ORDER BY id LIMIT %(limit)s
"""

RECENT_REJECTED_JOBS = """
SELECT id, processor, state, left(reason, 160) AS reason, finished_at
FROM jobs WHERE state IN ('invalid', 'dead', 'failed') ORDER BY finished_at DESC NULLS LAST LIMIT %(limit)s
"""

FINISHED_SINCE = """
SELECT count(*) FILTER (WHERE state IN ('invalid', 'dead')), count(*)
FROM jobs WHERE state IN ('succeeded', 'invalid', 'failed', 'dead', 'cancelled')
  AND finished_at >= now() - make_interval(secs => %(s)s)
"""
