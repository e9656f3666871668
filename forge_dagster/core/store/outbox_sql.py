"""SQL for the transactional outbox: written beside a transition, drained by the relay."""

INSERT_OUTBOX = """
INSERT INTO outbox (topic, key, payload) VALUES (%(topic)s, %(key)s, %(payload)s) RETURNING id
"""

# Rows whose writing transaction is below this snapshot's xmin: every transaction that could still
# commit a row is newer, so a slow transaction's row is read once it commits, never skipped. A row
# waits while an earlier undelivered row of the same key exists (delivery in order per key).
# SKIP LOCKED lets several relays drain side by side without sending a row twice at once.
FETCH_DELIVERABLE = """
SELECT o.id, o.topic, o.key, o.payload, o.attempts
FROM outbox o
WHERE o.delivered_at IS NULL
  AND o.available_at <= now()
  AND o.txid < pg_snapshot_xmin(pg_current_snapshot())
  AND NOT EXISTS (
      SELECT 1 FROM outbox e
      WHERE e.key = o.key AND e.delivered_at IS NULL AND e.id < o.id
  )
ORDER BY o.id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""

MARK_DELIVERED = """
UPDATE outbox SET delivered_at = now(), attempts = attempts + 1, last_error = NULL
WHERE id = ANY(%(ids)s::bigint[])
"""

MARK_FAILED = """
UPDATE outbox
SET attempts = attempts + 1, last_error = %(error)s,
    available_at = now() + make_interval(secs => %(delay)s)
WHERE id = %(id)s
"""

OUTBOX_LAG = """
SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)
FROM outbox WHERE delivered_at IS NULL
"""
