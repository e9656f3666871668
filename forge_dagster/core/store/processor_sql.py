"""SQL for the processor registry (versions and their status), the earlier answers a repair prompt
quotes, and the validated outputs an export reads.

Status rules live in the database too (migration 006): one active version per name (a partial unique
index) and only draft -> active -> retired moves (a trigger), so no code path can break them.
"""

# Registry changes take this lock (per schema) so two syncs or promotions never interleave.
LOCK_REGISTRY = "SELECT pg_advisory_xact_lock(hashtext(current_schema() || ':processors'))"

LIST_PROCESSORS = """
SELECT name, version, status, provider, model, mode, tags, definition, fingerprint, source, created_at,
       promoted_at, retired_at
FROM processors ORDER BY name, created_at, version
"""

NAMES_WITH_VERSIONS = "SELECT DISTINCT name FROM processors"

INSERT_PROCESSOR = """
INSERT INTO processors (name, version, status, provider, model, mode, tags, definition, fingerprint, source,
                        promoted_at)
VALUES (%(name)s, %(version)s, %(status)s, %(provider)s, %(model)s, %(mode)s, %(tags)s, %(definition)s,
        %(fingerprint)s, %(source)s, CASE WHEN %(status)s = 'active' THEN now() END)
ON CONFLICT (name, version) DO NOTHING
RETURNING status
"""

GET_STATUS = "SELECT status FROM processors WHERE name = %(name)s AND version = %(version)s FOR UPDATE"

ACTIVE_VERSION = "SELECT version FROM processors WHERE name = %(name)s AND status = 'active' FOR UPDATE"

# Promotion retires the active version first: the partial unique index allows one active row per name.
RETIRE_ACTIVE = """
UPDATE processors SET status = 'retired', retired_at = now()
WHERE name = %(name)s AND status = 'active' AND version <> %(version)s
RETURNING version
"""

ACTIVATE = """
UPDATE processors SET status = 'active', promoted_at = now()
WHERE name = %(name)s AND version = %(version)s AND status = 'draft'
RETURNING version
"""

RETIRE = """
UPDATE processors SET status = 'retired', retired_at = now()
WHERE name = %(name)s AND version = %(version)s AND status IN ('draft', 'active')
RETURNING version
"""

INSERT_EVENT = """
INSERT INTO processor_events (name, version, actor, from_status, to_status, note)
VALUES (%(name)s, %(version)s, %(actor)s, %(from_status)s, %(to_status)s, %(note)s)
"""

PROCESSOR_EVENTS = """
SELECT name, version, at, actor, from_status, to_status, note FROM processor_events
WHERE name = %(name)s ORDER BY id
"""

# The latest answered (HTTP 200) result of each job before its current attempt: what a repair quotes.
LAST_ANSWERS = """
SELECT DISTINCT ON (r.job_id) r.job_id, r.attempt, r.custom_id, r.outcome, r.status_code, r.text, r.tool_input,
       r.stop_reason, r.usage
FROM unnest(%(ids)s::bigint[], %(attempts)s::int[]) AS t(job_id, attempt)
JOIN batch_results r ON r.job_id = t.job_id AND r.attempt < t.attempt
WHERE r.outcome = 'succeeded'
ORDER BY r.job_id, r.attempt DESC
"""

# How many answered results each job has had (its first answer and every repair).
ANSWER_COUNTS = """
SELECT job_id, count(*) FROM batch_results
WHERE job_id = ANY(%(ids)s::bigint[]) AND outcome = 'succeeded'
GROUP BY job_id
"""

# Validated outputs of one processor, hot and archived rows alike (the all_jobs view of migration 004).
VALIDATED_OUTPUTS = """
SELECT j.id AS job_id, j.external_id, j.source, j.processor_version, j.output, j.finished_at, v.vector
FROM all_jobs j
LEFT JOIN output_vectors v ON v.job_id = j.id AND v.attempt = j.attempt
WHERE j.processor = %(processor)s AND j.state = 'succeeded'
  AND (%(version)s::text IS NULL OR j.processor_version = %(version)s)
ORDER BY j.id
"""
