"""SQL for reading batches as an operator does: find one by any of its names, list them, show one.

Hot and archived batches alike (`all_batches`); the archive keeps a batch's jobs and result lines in
`jobs_archive` / `batch_results_archive`, read beside the hot tables by their own batch_id columns.
"""

# A batch named by Forge's id (a number), its forge batch id (fb_...) or the provider's batch id.
FIND_BATCH_IDS = """
SELECT id FROM batches
WHERE id = %(number)s OR forge_batch_id = %(ref)s OR provider_batch_id = %(ref)s
UNION
SELECT id FROM batches_archive a
WHERE a.id = %(number)s OR a.row ->> 'forge_batch_id' = %(ref)s OR a.row ->> 'provider_batch_id' = %(ref)s
ORDER BY id
"""

# Newest first, with each batch's age, its jobs by state (hot jobs; an archived batch's are all finished)
# and its booked cost.
LIST_BATCHES = """
SELECT b.id, b.forge_batch_id, b.provider, b.model, b.processor, b.processor_version, b.state,
       b.provider_batch_id, b.request_count, b.counts, b.created_at, b.ended_at, b.archived,
       extract(epoch FROM now() - b.created_at)::float8 AS age_s,
       coalesce(j.by_state, '{}'::jsonb) AS jobs, coalesce(c.cost, 0) AS cost_usd
FROM all_batches b
LEFT JOIN LATERAL (
    SELECT jsonb_object_agg(state, n) AS by_state
    FROM (SELECT state, count(*) AS n FROM jobs WHERE batch_id = b.id GROUP BY state) s
) j ON true
LEFT JOIN LATERAL (SELECT sum(cost_usd) AS cost FROM costs WHERE batch_id = b.id) c ON true
WHERE (%(states)s::text[] IS NULL OR b.state = ANY(%(states)s::text[]))
  AND (%(provider)s::text IS NULL OR b.provider = %(provider)s)
ORDER BY b.id DESC
LIMIT %(limit)s
"""

# The jobs that rode in the batch, by their state now: those still in it (hot or archived) and those that
# left it when they were requeued (their result line names them).
BATCH_JOB_STATES = """
WITH riders AS (
    SELECT id, state FROM jobs WHERE batch_id = %(batch_id)s
    UNION
    SELECT id, state FROM jobs_archive WHERE batch_id = %(batch_id)s
    UNION
    SELECT j.id, j.state FROM batch_results r JOIN jobs j ON j.id = r.job_id WHERE r.batch_id = %(batch_id)s
)
SELECT state, count(*) FROM riders GROUP BY state ORDER BY state
"""

# The provider's answers stored for the batch, by outcome (succeeded, errored, requeue).
BATCH_RESULT_OUTCOMES = """
SELECT outcome, count(*) FROM (
    SELECT outcome FROM batch_results WHERE batch_id = %(batch_id)s
    UNION ALL
    SELECT row ->> 'outcome' FROM batch_results_archive WHERE batch_id = %(batch_id)s
) r GROUP BY outcome ORDER BY outcome
"""
