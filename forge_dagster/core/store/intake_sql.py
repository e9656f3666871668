"""SQL of intake: rows COPYed into a staging table and inserted already reviewed, and the review of rows
other applications inserted straight into jobs."""

# Intake: rows are COPYed into a temporary table, then inserted, already reviewed (Forge checked them);
# a duplicate (source, external_id) is skipped here and reported by the caller as rejected.
CREATE_STAGING = """
CREATE TEMP TABLE intake_staging (
    seq bigint, source text, external_id text, processor text, processor_version text, mode text,
    payload jsonb, max_attempts integer, callback_url text, due_at timestamptz
) ON COMMIT DROP
"""

COPY_STAGING = """
COPY intake_staging (seq, source, external_id, processor, processor_version, mode, payload, max_attempts,
                     callback_url, due_at) FROM STDIN
"""

# Used between rows when a batch falls back to one row at a time.
CLEAR_STAGING = "TRUNCATE intake_staging"

INSERT_FROM_STAGING = """
WITH inserted AS (
    INSERT INTO jobs (source, external_id, processor, processor_version, mode, payload, max_attempts, callback_url,
                      due_at, reviewed)
    SELECT source, external_id, processor, processor_version, mode, payload, max_attempts, callback_url, due_at, true
    FROM intake_staging
    ORDER BY seq
    ON CONFLICT (source, external_id) DO NOTHING
    RETURNING id, source, external_id
), events AS (
    INSERT INTO job_events (job_id, actor, from_state, to_state, attempt, reason)
    SELECT id, %(actor)s, NULL, 'pending', 0, 'enqueued' FROM inserted
)
SELECT s.seq, CASE WHEN s.nth = 1 THEN i.id END AS id
FROM (
    SELECT seq, source, external_id,
           row_number() OVER (PARTITION BY source, external_id ORDER BY seq) AS nth
    FROM intake_staging
) s
LEFT JOIN inserted i ON i.source = s.source AND i.external_id = s.external_id
ORDER BY s.seq
"""

# Rows another application inserted straight into jobs are not reviewed (the column's default): intake
# checks each against the processor registry (pinning its version and resolving its mode) before any
# claim may take it, whatever version the row names.
UNREVIEWED_JOBS = """
SELECT id, processor, processor_version, mode, payload, due_at, callback_url FROM jobs
WHERE NOT reviewed AND state = 'pending'
ORDER BY id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""
