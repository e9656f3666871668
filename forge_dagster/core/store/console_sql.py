"""SQL for the operator's console: filtered pages of jobs and batches, a batch's history and members,
processor rates, key headroom, the night's level. Each page is one or two indexed reads, so it answers
quickly with a million jobs in the store (benchmarks/console.py measures it).

The filter clauses below are constants; only parameters carry what the operator typed.
"""

# One filter for the list of jobs and its counts. `q` is an intake id prefix (LIKE 'abc%', its wildcards
# escaped by the caller), answered by jobs_external_id_prefix_idx; `q_id` a Forge id typed in the same box.
# The provider is the pinned processor version's (a handler step has none). The list walks ids downwards:
# for a window ending at `until` it starts at the first job created an hour after it (one probe of
# jobs_created_idx; ids and creation times run together, a job's intake transaction lasting far less than
# an hour), instead of walking every newer job first.
_JOB_FILTER = """
  (%(processor)s::text IS NULL OR j.processor = %(processor)s)
  AND (%(version)s::text IS NULL OR j.processor_version = %(version)s)
  AND (%(batch_id)s::bigint IS NULL OR j.batch_id = %(batch_id)s)
  AND (%(provider)s::text IS NULL OR EXISTS (
        SELECT 1 FROM processors p WHERE p.name = j.processor AND p.version = j.processor_version
        AND p.provider = %(provider)s))
  AND (%(since)s::timestamptz IS NULL OR j.created_at >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR j.created_at < %(until)s)
  AND (%(until)s::timestamptz IS NULL OR j.id < coalesce((SELECT u.id FROM jobs u
        WHERE u.created_at >= %(until)s::timestamptz + interval '1 hour' ORDER BY u.created_at, u.id LIMIT 1),
        9223372036854775807))
  AND (%(q)s::text IS NULL OR j.external_id LIKE %(q)s OR j.id = %(q_id)s::bigint)
"""

# A page of jobs, newest first; the next page starts below the last id shown (keyset, no OFFSET).
JOBS_PAGE = f"""
SELECT j.id, j.source, j.external_id, j.processor, j.processor_version, j.mode, j.state, j.attempt,
       j.max_attempts, j.batch_id, left(j.reason, 160) AS reason, j.cost_usd, j.created_at, j.finished_at
FROM jobs j
WHERE (%(states)s::text[] IS NULL OR j.state = ANY (%(states)s::text[]))
  AND (%(before)s::bigint IS NULL OR j.id < %(before)s)
  AND {_JOB_FILTER}
ORDER BY j.id DESC
LIMIT %(limit)s
"""

# Jobs by state, all of them: each state counted exactly up to `cap` (through jobs_state_id_idx). One branch
# per state, each naming its state as a literal: the planner then knows how common it is, and reads a rare
# state through the index instead of walking the table until `cap` match (which it would choose for a state
# it cannot see, as in a join over the list of states).
JOB_COUNTS_ALL = """
SELECT 'pending' AS state, (SELECT count(*) FROM (SELECT 1 FROM jobs WHERE state = 'pending' LIMIT %(cap)s) x) AS n
UNION ALL
SELECT 'claimed' AS state, (SELECT count(*) FROM (SELECT 1 FROM jobs WHERE state = 'claimed' LIMIT %(cap)s) x) AS n
UNION ALL
SELECT 'running' AS state, (SELECT count(*) FROM (SELECT 1 FROM jobs WHERE state = 'running' LIMIT %(cap)s) x) AS n
UNION ALL
SELECT 'submitted' AS state, (SELECT count(*) FROM (SELECT 1 FROM jobs WHERE state = 'submitted' LIMIT %(cap)s) x) AS n
UNION ALL
SELECT 'collected' AS state, (SELECT count(*) FROM (SELECT 1 FROM jobs WHERE state = 'collected' LIMIT %(cap)s) x) AS n
UNION ALL
SELECT 'succeeded' AS state, (SELECT count(*) FROM (SELECT 1 FROM jobs WHERE state = 'succeeded' LIMIT %(cap)s) x) AS n
UNION ALL
SELECT 'invalid' AS state, (SELECT count(*) FROM (SELECT 1 FROM jobs WHERE state = 'invalid' LIMIT %(cap)s) x) AS n
UNION ALL
SELECT 'failed' AS state, (SELECT count(*) FROM (SELECT 1 FROM jobs WHERE state = 'failed' LIMIT %(cap)s) x) AS n
UNION ALL
SELECT 'dead' AS state, (SELECT count(*) FROM (SELECT 1 FROM jobs WHERE state = 'dead' LIMIT %(cap)s) x) AS n
UNION ALL
SELECT 'cancelled' AS state, (SELECT count(*) FROM (SELECT 1 FROM jobs WHERE state = 'cancelled' LIMIT %(cap)s) x) AS n
"""

# The planner's estimate of each state's jobs (pg_stats, refreshed by autovacuum), for the states past the
# cap: the millions that succeeded are shown as about so many.
JOB_STATE_ESTIMATES = """
SELECT v.state, round(v.freq * greatest(t.reltuples, 0))::bigint AS estimate
FROM pg_stats st
CROSS JOIN unnest(st.most_common_vals::text::text[], st.most_common_freqs) AS v(state, freq)
CROSS JOIN (SELECT reltuples FROM pg_class WHERE oid = 'jobs'::regclass) t
WHERE st.schemaname = current_schema() AND st.tablename = 'jobs' AND st.attname = 'state'
"""

# Jobs by state under a filter (its states aside, so every state's count is a link), among the newest
# `cap` jobs it matches: bounded work however many match.
JOB_COUNTS_FILTERED = f"""
SELECT state, count(*) AS n
FROM (SELECT j.state FROM jobs j WHERE {_JOB_FILTER} ORDER BY j.id DESC LIMIT %(cap)s) newest
GROUP BY state
"""

# Archived jobs (the same filter on the indexed columns the archive keeps), newest first.
ARCHIVED_JOBS_PAGE = """
SELECT a.id, a.source, a.external_id, a.row ->> 'processor' AS processor,
       a.row ->> 'processor_version' AS processor_version, a.row ->> 'mode' AS mode, a.state,
       (a.row ->> 'attempt')::int AS attempt, (a.row ->> 'max_attempts')::int AS max_attempts, a.batch_id,
       left(a.row ->> 'reason', 160) AS reason, (a.row ->> 'cost_usd')::numeric AS cost_usd,
       (a.row ->> 'created_at')::timestamptz AS created_at, a.finished_at, a.archived_at
FROM jobs_archive a
WHERE (%(states)s::text[] IS NULL OR a.state = ANY (%(states)s::text[]))
  AND (%(batch_id)s::bigint IS NULL OR a.batch_id = %(batch_id)s)
  AND (%(q)s::text IS NULL OR a.external_id LIKE %(q)s OR a.id = %(q_id)s::bigint)
  AND (%(before)s::bigint IS NULL OR a.id < %(before)s)
ORDER BY a.id DESC
LIMIT %(limit)s
"""

ARCHIVED_BATCHES_PAGE = """
SELECT a.id, a.provider, a.row ->> 'model' AS model, a.row ->> 'processor' AS processor, 'archived' AS state,
       (a.row ->> 'request_count')::int AS request_count, a.created_at, a.collected_at, a.archived_at
FROM batches_archive a
WHERE (%(provider)s::text IS NULL OR a.provider = %(provider)s)
  AND (%(before)s::bigint IS NULL OR a.id < %(before)s)
ORDER BY a.id DESC
LIMIT %(limit)s
"""

# An archived job's collected answers (result lines keep their row as jsonb).
ARCHIVED_JOB_RESULTS = """
SELECT (row ->> 'attempt')::int AS attempt, batch_id, row ->> 'outcome' AS outcome,
       (row ->> 'status_code')::int AS status_code, row ->> 'stop_reason' AS stop_reason,
       row ->> 'error_class' AS error_class, row ->> 'error_message' AS error_message, row -> 'raw' AS raw,
       (row ->> 'received_at')::timestamptz AS received_at
FROM batch_results_archive
WHERE batch_id = %(batch_id)s AND (row ->> 'job_id')::bigint = %(job_id)s
ORDER BY received_at
"""

# A page of batches by state and provider, newest first, with age and cost.
BATCHES_PAGE = """
SELECT b.id, b.forge_batch_id, b.provider, b.model, b.processor, b.processor_version, b.state,
       b.request_count, b.counts, b.key_alias, b.created_at, b.submitted_at, b.ended_at, b.collected_at,
       round(extract(epoch FROM coalesce(b.collected_at, now()) - b.created_at))::bigint AS age_s,
       (SELECT coalesce(sum(c.cost_usd), 0) FROM costs c WHERE c.batch_id = b.id) AS cost_usd
FROM batches b
WHERE (%(states)s::text[] IS NULL OR b.state = ANY (%(states)s::text[]))
  AND (%(provider)s::text IS NULL OR b.provider = %(provider)s)
  AND (%(before)s::bigint IS NULL OR b.id < %(before)s)
ORDER BY b.id DESC
LIMIT %(limit)s
"""

BATCH_COUNTS = "SELECT state, count(*) AS n FROM batches GROUP BY state ORDER BY state"

BATCH_HISTORY = """
SELECT at, state, raw_status, counts FROM batch_status_history WHERE batch_id = %(batch_id)s ORDER BY id
"""

# A batch's jobs by outcome (hot and archived), and a sample of each.
BATCH_JOB_STATES = """
SELECT state, count(*) AS n FROM jobs WHERE batch_id = %(batch_id)s GROUP BY state
UNION ALL
SELECT state, count(*) FROM jobs_archive WHERE batch_id = %(batch_id)s GROUP BY state
"""

BATCH_JOBS = """
SELECT id, external_id, state, attempt, left(reason, 160) AS reason FROM jobs WHERE batch_id = %(batch_id)s
UNION ALL
SELECT id, external_id, state, (row ->> 'attempt')::int, left(row ->> 'reason', 160) FROM jobs_archive
WHERE batch_id = %(batch_id)s
ORDER BY id
LIMIT %(limit)s
"""

# The Dagster runs that worked on a batch, by the leases they took in the store for its partition.
BATCH_RUNS = """
SELECT run_id, job_name, taken_at, heartbeat_at, dead_at, reason FROM run_leases
WHERE partition_key = %(partition)s ORDER BY taken_at
"""

# Outcomes per processor version among the newest `window` jobs (a backward walk of the primary key):
# how many ended, succeeded, invalid (the validator refused every answer).
PROCESSOR_RATES = """
SELECT processor, processor_version, count(*) AS ended,
       count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE state = 'invalid') AS invalid
FROM (SELECT processor, processor_version, state FROM jobs ORDER BY id DESC LIMIT %(window)s) newest
WHERE state IN ('succeeded', 'invalid', 'failed', 'dead', 'cancelled')
GROUP BY processor, processor_version
"""

# Keys with their pacing (limits, how far ahead the schedule is booked, a 429's block), never the key.
KEYS_WITH_PACING = """
SELECT k.provider, k.alias, k.masked, k.state, k.reason, k.paused_at, k.paused_until, k.probe_count,
       k.last_probe_at, k.last_probe_error, p.rpm, p.tpm,
       greatest(0, coalesce(p.tat_r, 0) - extract(epoch FROM clock_timestamp()))::float8 AS booked_ahead_s,
       greatest(0, coalesce(p.blocked_until, 0) - extract(epoch FROM clock_timestamp()))::float8 AS blocked_s
FROM provider_keys k
LEFT JOIN key_pacing p ON p.provider = k.provider AND p.fingerprint = k.fingerprint
ORDER BY k.provider, k.alias
"""

# Today's budget alerts: how many jobs each budget held back.
BUDGET_ALERTS_TODAY = """
SELECT scope, held_jobs, first_at, last_at FROM budget_alerts
WHERE day = (now() AT TIME ZONE 'UTC')::date ORDER BY scope
"""

LATEST_NIGHT = "SELECT night, level, created_at FROM briefings ORDER BY night DESC LIMIT 1"

OPERATOR_EVENTS_OF_JOB = """
SELECT at, actor, from_state, to_state, reason FROM job_events
WHERE job_id = %(job_id)s AND actor LIKE 'operator:%%' ORDER BY id
"""

# The job's callback stamps (outbox topic job.stamp, key stamp:job:<id>), hot and archived; only read for a
# job that has a callback. A refused stamp's reason is its last_error.
JOB_STAMPS = """
SELECT id, created_at, attempts, last_error, delivered_at, refused_at FROM outbox
WHERE topic = 'job.stamp' AND key = %(key)s
UNION ALL
SELECT id, (row ->> 'created_at')::timestamptz, (row ->> 'attempts')::int, row ->> 'last_error', delivered_at,
       (row ->> 'refused_at')::timestamptz
FROM outbox_archive WHERE topic = 'job.stamp' AND key = %(key)s
ORDER BY id
"""

# The ledger since `since` by UTC day, by provider/model and by processor, in one scan (grouping sets).
COSTS_GROUPED = """
SELECT CASE WHEN GROUPING(to_char(booked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')) = 0 THEN 'day'
            WHEN GROUPING(provider || '/' || model) = 0 THEN 'model' ELSE 'processor' END AS grouping,
       coalesce(to_char(booked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), provider || '/' || model,
                coalesce(processor, '(none)')) AS key,
       count(*) AS attempts, sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
       coalesce(sum(cost_usd), 0) AS cost_usd, count(*) FILTER (WHERE cost_usd IS NULL) AS unpriced_attempts
FROM costs
WHERE booked_at >= %(since)s
GROUP BY GROUPING SETS ((to_char(booked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')), (provider || '/' || model),
                        (coalesce(processor, '(none)')))
ORDER BY 1, 2
"""
