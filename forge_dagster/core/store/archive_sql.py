"""SQL for the archive: cooled batches, their jobs and result lines, finished unbatched jobs and
delivered outbox rows move out of the hot tables into `*_archive` tables, and stay queryable.

A batch is cooled when it was collected longer ago than the configured age and none of its jobs is
still open (a retried job left the batch when it went back to pending). Each statement moves one
bounded slice in one transaction: rows are deleted from the hot table and inserted into the archive
by the same statement, so a crash leaves every row in exactly one place. `job_events` (the audit) and
`costs` (the ledger) stay where they are.
"""

# The batches are picked and locked first (SKIP LOCKED: two archivers never fight); then their result
# lines, their jobs and the batches themselves move. The foreign keys to `batches` are checked at the
# end of the statement, when the referencing rows are gone too.
ARCHIVE_COOLED_BATCHES = """
WITH picked AS MATERIALIZED (
    SELECT b.id FROM batches b
    WHERE b.state = 'collected'
      AND b.collected_at < now() - make_interval(secs => %(older_than_s)s)
      AND NOT EXISTS (
          SELECT 1 FROM jobs j
          WHERE j.batch_id = b.id AND j.state NOT IN ('succeeded', 'invalid', 'failed', 'dead', 'cancelled'))
    ORDER BY b.id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), results AS (
    DELETE FROM batch_results r USING picked p WHERE r.batch_id = p.id RETURNING r.*
), results_kept AS (
    INSERT INTO batch_results_archive (batch_id, custom_id, row)
    SELECT r.batch_id, r.custom_id, to_jsonb(r) FROM results r
), moved_jobs AS (
    DELETE FROM jobs j USING picked p WHERE j.batch_id = p.id RETURNING j.*
), jobs_kept AS (
    INSERT INTO jobs_archive (id, batch_id, source, external_id, state, finished_at, row)
    SELECT m.id, m.batch_id, m.source, m.external_id, m.state, m.finished_at, to_jsonb(m) FROM moved_jobs m
), moved_batches AS (
    DELETE FROM batches b USING picked p WHERE b.id = p.id RETURNING b.*
), batches_kept AS (
    INSERT INTO batches_archive (id, provider, created_at, collected_at, row)
    SELECT m.id, m.provider, m.created_at, m.collected_at,
           jsonb_set(to_jsonb(m), '{state}', '"archived"') || jsonb_build_object('archived_at', now())
    FROM moved_batches m
)
SELECT (SELECT count(*) FROM moved_batches), (SELECT count(*) FROM moved_jobs), (SELECT count(*) FROM results)
"""

# Finished jobs that never belonged to a batch (realtime jobs, intake refusals).
ARCHIVE_FINISHED_UNBATCHED_JOBS = """
WITH picked AS MATERIALIZED (
    SELECT id FROM jobs
    WHERE batch_id IS NULL AND state IN ('succeeded', 'invalid', 'failed', 'dead', 'cancelled')
      AND finished_at < now() - make_interval(secs => %(older_than_s)s)
    ORDER BY id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), moved AS (
    DELETE FROM jobs j USING picked p WHERE j.id = p.id RETURNING j.*
), kept AS (
    INSERT INTO jobs_archive (id, batch_id, source, external_id, state, finished_at, row)
    SELECT m.id, m.batch_id, m.source, m.external_id, m.state, m.finished_at, to_jsonb(m) FROM moved m
)
SELECT count(*) FROM moved
"""

# Delivered and refused outbox rows (the open ones are the relay's and never move).
ARCHIVE_DELIVERED_OUTBOX = """
WITH picked AS MATERIALIZED (
    SELECT id FROM outbox
    WHERE coalesce(delivered_at, refused_at) < now() - make_interval(secs => %(older_than_s)s)
    ORDER BY id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), moved AS (
    DELETE FROM outbox o USING picked p WHERE o.id = p.id RETURNING o.*
), kept AS (
    INSERT INTO outbox_archive (id, topic, key, delivered_at, row)
    SELECT m.id, m.topic, m.key, m.delivered_at, to_jsonb(m) - 'txid' FROM moved m
)
SELECT count(*) FROM moved
"""

ARCHIVE_TOTALS = """
SELECT (SELECT count(*) FROM batches_archive), (SELECT count(*) FROM jobs_archive),
       (SELECT count(*) FROM batch_results_archive), (SELECT count(*) FROM outbox_archive),
       (SELECT max(archived_at) FROM batches_archive)
"""

RECENTLY_ARCHIVED_BATCHES = """
SELECT id, provider, row ->> 'model' AS model, row ->> 'processor' AS processor,
       (row ->> 'request_count')::int AS requests, collected_at, archived_at
FROM batches_archive ORDER BY archived_at DESC, id DESC LIMIT %(limit)s
"""

# One job wherever it lives, in the hot table's shape.
FIND_JOB = """
SELECT * FROM all_jobs WHERE id = %(job_id)s
"""

FIND_BATCH = """
SELECT * FROM all_batches WHERE id = %(batch_id)s
"""

ARCHIVED_BATCH_JOBS = """
SELECT id, external_id, state, row ->> 'reason' AS reason, (row -> 'output') AS output
FROM jobs_archive WHERE batch_id = %(batch_id)s ORDER BY id
"""

# Consistency of the archive: a batch is never split between the hot and the archive tables.
SPLIT_BATCHES = """
SELECT
  (SELECT count(*) FROM jobs j JOIN batches_archive a ON a.id = j.batch_id),
  (SELECT count(*) FROM jobs_archive ja
   WHERE ja.batch_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM batches_archive a WHERE a.id = ja.batch_id))
"""
