"""SQL for the transactional outbox: written beside a transition, drained by the relay."""

INSERT_OUTBOX = """
INSERT INTO outbox (topic, key, payload) VALUES (%(topic)s, %(key)s, %(payload)s) RETURNING id
"""

# The relay reads ready rows with operations_sql.FETCH_READY_RUNS (below the snapshot's xmin, in order
# per key) and marks them delivered here, in its transaction.
MARK_DELIVERED = """
UPDATE outbox SET delivered_at = now(), attempts = attempts + 1, last_error = NULL
WHERE id = ANY(%(ids)s::bigint[])
"""

OUTBOX_LAG = """
SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)
FROM outbox WHERE delivered_at IS NULL AND refused_at IS NULL
"""
