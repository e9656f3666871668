"""SQL for money: budgets and the estimates that reserve them, jobs held back by a budget, the cost
ledger's reports, and the reconciliation of a provider batch's usage with the ledger.

Budget days are UTC days. The ledger (`costs`, migration 002) has one row per billed job attempt; an attempt
at a model with no price has a NULL cost (migration 011) and is counted as unpriced in the reports.
"""

# Budget admission runs under this lock (per schema): two builders never spend the same headroom.
LOCK_BUDGETS = "SELECT pg_advisory_xact_lock(hashtext(current_schema() || ':budgets'))"

LIST_BUDGETS = "SELECT scope, daily_usd, updated_at FROM budgets ORDER BY scope"

SET_BUDGET = """
INSERT INTO budgets (scope, daily_usd) VALUES (%(scope)s, %(daily_usd)s)
ON CONFLICT (scope) DO UPDATE SET daily_usd = excluded.daily_usd, updated_at = now()
"""

CLEAR_BUDGET = "DELETE FROM budgets WHERE scope = %(scope)s RETURNING scope"

_TODAY = "(date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')"

# Booked today, per processor (the '*' scope is their sum).
SPENT_TODAY = f"""
SELECT coalesce(processor, ''), coalesce(sum(cost_usd), 0) FROM costs
WHERE booked_at >= {_TODAY}
GROUP BY processor
"""

# Estimates of attempts still in flight (claimed, submitted or collected at that very attempt): money
# the provider may still bill. Driven from the in-flight jobs, which are few.
IN_FLIGHT = """
SELECT e.processor, coalesce(sum(e.estimated_usd), 0)
FROM jobs j JOIN cost_estimates e ON e.job_id = j.id AND e.attempt = j.attempt
WHERE j.state IN ('claimed', 'running', 'submitted', 'collected')
GROUP BY e.processor
"""

INSERT_ESTIMATES = """
INSERT INTO cost_estimates (job_id, attempt, processor, estimated_usd)
SELECT * FROM unnest(%(ids)s::bigint[], %(attempts)s::int[], %(processors)s::text[], %(estimates)s::numeric[])
ON CONFLICT (job_id, attempt) DO UPDATE SET estimated_usd = excluded.estimated_usd
"""

PRUNE_ESTIMATES = "DELETE FROM cost_estimates WHERE created_at < now() - interval '3 days'"

# `first` is true only for the first hold of a scope on a UTC day: the operator is told then.
RECORD_ALERT = """
INSERT INTO budget_alerts AS a (scope, day, held_jobs)
VALUES (%(scope)s, (now() AT TIME ZONE 'UTC')::date, %(held)s)
ON CONFLICT (scope, day) DO UPDATE SET held_jobs = a.held_jobs + excluded.held_jobs, last_at = now()
RETURNING (xmax = 0) AS first, day
"""

BUDGET_ALERTS = "SELECT scope, day, first_at, last_at, held_jobs FROM budget_alerts ORDER BY day DESC, scope"

# The ledger grouped by processor, provider/model or UTC day (`by` picks one of three fixed keys).
COSTS_BY = """
SELECT CASE %(by)s::text WHEN 'processor' THEN coalesce(processor, '(none)')
                   WHEN 'model' THEN provider || '/' || model
                   ELSE to_char(booked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') END AS key,
       count(*) AS attempts, sum(input_tokens) AS input_tokens, sum(cached_input_tokens) AS cached_input_tokens,
       sum(output_tokens) AS output_tokens, sum(reasoning_tokens) AS reasoning_tokens,
       coalesce(sum(cost_usd), 0) AS cost_usd, count(*) FILTER (WHERE cost_usd IS NULL) AS unpriced_attempts
FROM costs
WHERE booked_at >= %(since)s
GROUP BY 1 ORDER BY 1
"""

# Prompt caching per processor and price class (provider/model, batch or not): attempts, those that read the
# cache, and the token classes caching prices apart (priced in Python: what caching saved).
CACHE_BY_PROCESSOR = """
SELECT coalesce(processor, '(none)') AS processor, provider, model, batch_priced, count(*) AS attempts,
       count(*) FILTER (WHERE cached_input_tokens > 0) AS cache_hits,
       sum(input_tokens) AS input_tokens, sum(cached_input_tokens) AS cached_input_tokens,
       sum(cache_write_5m_tokens) AS cache_write_5m_tokens, sum(cache_write_1h_tokens) AS cache_write_1h_tokens,
       sum(output_tokens) AS output_tokens
FROM costs
WHERE booked_at >= %(since)s
GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
"""

COSTS_BY_DAY_AND_MODEL = """
SELECT to_char(booked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, provider, model, count(*) AS attempts,
       coalesce(sum(cost_usd), 0) AS cost_usd
FROM costs
WHERE booked_at >= %(since)s
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""

LEDGER_TOTAL = """
SELECT count(*), coalesce(sum(cost_usd), 0), count(*) FILTER (WHERE cost_usd IS NULL)
FROM costs WHERE booked_at >= %(since)s
"""

# The ledger rows of one batch, and the usage of its stored result lines, summed.
BATCH_LEDGER = """
SELECT count(*), coalesce(sum(input_tokens), 0), coalesce(sum(cached_input_tokens), 0),
       coalesce(sum(output_tokens), 0), coalesce(sum(reasoning_tokens), 0), coalesce(sum(cost_usd), 0)
FROM costs WHERE batch_id = %(batch_id)s
"""

BATCH_RESULT_USAGE = """
SELECT count(*), coalesce(sum((usage ->> 'input_tokens')::bigint), 0),
       coalesce(sum((usage ->> 'cached_input_tokens')::bigint), 0),
       coalesce(sum((usage ->> 'output_tokens')::bigint), 0),
       coalesce(sum((usage ->> 'reasoning_tokens')::bigint), 0)
FROM batch_results WHERE batch_id = %(batch_id)s
"""

UNRECONCILED_BATCHES = """
SELECT b.id FROM batches b
LEFT JOIN cost_reconciliations c ON c.batch_id = b.id
WHERE b.provider = %(provider)s AND b.state = 'collected' AND b.provider_batch_id IS NOT NULL
  AND c.batch_id IS NULL
ORDER BY b.id LIMIT %(limit)s
"""

UPSERT_RECONCILIATION = """
INSERT INTO cost_reconciliations (batch_id, provider, provider_batch_id, ledger, results, provider_usage, matched,
                                  note)
VALUES (%(batch_id)s, %(provider)s, %(provider_batch_id)s, %(ledger)s, %(results)s, %(provider_usage)s,
        %(matched)s, %(note)s)
ON CONFLICT (batch_id) DO UPDATE
SET ledger = excluded.ledger, results = excluded.results, provider_usage = excluded.provider_usage,
    matched = excluded.matched, note = excluded.note, checked_at = now()
"""

RECONCILIATIONS = """
SELECT batch_id, provider, provider_batch_id, ledger, results, provider_usage, matched, note, checked_at
FROM cost_reconciliations ORDER BY batch_id
"""

SOURCE_COST = """
SELECT coalesce(sum(c.cost_usd), 0) FROM costs c JOIN jobs j ON j.id = c.job_id WHERE j.source = %(source)s
"""

# Per processor of one intake source: its jobs, how many succeeded, and what the ledger booked for them.
SOURCE_BY_PROCESSOR = """
WITH booked AS (
    SELECT job_id, sum(cost_usd) AS cost_usd FROM costs
    WHERE job_id IN (SELECT id FROM jobs WHERE source = %(source)s) GROUP BY job_id
)
SELECT j.processor, count(*) AS jobs, count(*) FILTER (WHERE j.state = 'succeeded') AS succeeded,
       coalesce(sum(b.cost_usd), 0) AS cost_usd
FROM jobs j LEFT JOIN booked b ON b.job_id = j.id
WHERE j.source = %(source)s
GROUP BY j.processor ORDER BY j.processor
"""

# One ledger row per (job, attempt) the provider billed, at realtime (non-batch) prices; NULL cost when the
# model has no price (every BilledAttempt used tokens).
BOOK_REALTIME_COSTS = """
INSERT INTO costs (job_id, attempt, batch_id, provider, model, processor, input_tokens, cached_input_tokens,
                   output_tokens, reasoning_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cost_usd,
                   pricing_version, batch_priced)
SELECT t.id, t.attempt, NULL, t.provider, t.model, t.processor,
       coalesce((t.usage ->> 'input_tokens')::int, 0), coalesce((t.usage ->> 'cached_input_tokens')::int, 0),
       coalesce((t.usage ->> 'output_tokens')::int, 0), coalesce((t.usage ->> 'reasoning_tokens')::int, 0),
           coalesce((t.usage ->> 'cache_write_5m_tokens')::int, 0),
           coalesce((t.usage ->> 'cache_write_1h_tokens')::int, 0),
       t.cost, %(pricing_version)s, false
FROM unnest(%(ids)s::bigint[], %(attempts)s::int[], %(providers)s::text[], %(models)s::text[],
            %(processors)s::text[], %(usages)s::jsonb[], %(costs)s::numeric[])
    AS t(id, attempt, provider, model, processor, usage, cost)
ON CONFLICT (job_id, attempt) DO NOTHING
RETURNING job_id, cost_usd
"""
