"""SQL for the transactional outbox: written beside a transition, drained by the relay in lanes."""

INSERT_OUTBOX = """
INSERT INTO outbox (topic, key, payload) VALUES (%(topic)s, %(key)s, %(payload)s) RETURNING id
"""

# The relay reads ready rows with FETCH_READY_RUNS (below the snapshot's xmin, in order
# per key) and marks them delivered here, in its transaction.
MARK_DELIVERED = """
UPDATE outbox SET delivered_at = now(), attempts = attempts + 1, last_error = NULL
WHERE id = ANY(%(ids)s::bigint[])
"""

OUTBOX_LAG = """
SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)
FROM outbox WHERE delivered_at IS NULL AND refused_at IS NULL
"""

# The rows one relay lane may deliver now, and for each key the run of consecutive rows that are ready,
# so a lane can send several rows of one key together (a storm becomes one message) in order.
# A row is ready when it is due, its transaction is below the snapshot's xmin (every transaction that
# could still commit an outbox row is newer, so a late commit is read later, never skipped) and its
# topic belongs to the lane. A key's run stops at its first row that is not ready: later rows wait.
# SKIP LOCKED may hide a row another relay holds; `prev_id` lets the caller keep, per key, only the
# rows whose predecessor it holds too, so two relays never deliver one key out of order.
# A relay round keeps its transaction open while it sends (its lane budget is 15 s, a send times out
# within seconds): it may sit idle that long, longer than other transactions of the store may.
RELAY_IDLE_LIMIT = "SET LOCAL idle_in_transaction_session_timeout = '120s'"

FETCH_READY_RUNS = """
WITH open AS (
    SELECT o.id, o.key,
           (o.available_at <= now()
            AND o.txid < pg_snapshot_xmin(pg_current_snapshot())
            AND (o.topic = ANY(%(topics)s::text[])) = %(include)s) AS ready
    FROM outbox o
    WHERE o.delivered_at IS NULL AND o.refused_at IS NULL
), runs AS (
    SELECT id, lag(id) OVER w AS prev_id, bool_and(ready) OVER w AS run_ready
    FROM open
    WINDOW w AS (PARTITION BY key ORDER BY id)
)
SELECT o.id, o.topic, o.key, o.payload, o.attempts, r.prev_id
FROM runs r JOIN outbox o ON o.id = r.id
-- Rechecked on the locked row itself: a row another relay delivered (or failed) after this statement's
-- snapshot comes back here unlocked, and only these conditions on `o` are re-evaluated (EvalPlanQual).
WHERE r.run_ready AND o.delivered_at IS NULL AND o.refused_at IS NULL AND o.available_at <= now()
ORDER BY o.id
LIMIT %(limit)s
FOR UPDATE OF o SKIP LOCKED
"""

# Has every transaction that was running when `horizon` was read ended? Until then an outbox row one of
# them wrote may still commit below the relay's reach (see FETCH_READY_RUNS). The horizon is a new xid of
# its own: a snapshot's xmax is only past the latest *completed* one, and running xids may lie beyond it.
HORIZON = "SELECT pg_current_xact_id()::text"

PASSED_HORIZON = "SELECT pg_snapshot_xmin(pg_current_snapshot()) >= %(horizon)s::xid8"

# A failed delivery: due again after `delay`, the last error kept (only while still undelivered).
MARK_ATTEMPT_FAILED = """
UPDATE outbox
SET attempts = attempts + 1, last_error = %(error)s, available_at = now() + make_interval(secs => %(delay)s)
WHERE id = %(id)s AND delivered_at IS NULL AND refused_at IS NULL
"""

# Stamps whose destination the callback policy refuses: closed for good with the reason (never retried,
# not counted as delivered). No request was sent, so no attempt is counted.
MARK_REFUSED = """
UPDATE outbox o SET refused_at = now(), last_error = t.reason
FROM unnest(%(ids)s::bigint[], %(reasons)s::text[]) AS t(id, reason)
WHERE o.id = t.id AND o.delivered_at IS NULL AND o.refused_at IS NULL
"""

# Refused stamps, newest first, for the operator (the reason names the host and address, not the URL,
# which may carry a token).
RECENT_REFUSED = """
SELECT id, key, payload ->> 'job_id' AS job_id, last_error AS reason, refused_at
FROM outbox WHERE refused_at IS NOT NULL ORDER BY refused_at DESC, id DESC LIMIT %(limit)s
"""

COUNT_HELD = """
SELECT count(*) FROM outbox WHERE delivered_at IS NULL AND refused_at IS NULL AND (topic = ANY(%(topics)s::text[])) = %(include)s
"""

UNDELIVERED = """
SELECT id, topic, key, attempts, last_error, created_at, available_at
FROM outbox WHERE delivered_at IS NULL AND refused_at IS NULL ORDER BY id LIMIT %(limit)s
"""

# Open rows (neither delivered nor refused): count, age of the oldest, those that failed at least once; then
# delivered and refused rows, archived ones included.
OUTBOX_STATS = """
SELECT count(*) FILTER (WHERE delivered_at IS NULL AND refused_at IS NULL),
       coalesce(extract(epoch FROM now() - min(created_at) FILTER (WHERE delivered_at IS NULL
                                                                    AND refused_at IS NULL)), 0),
       count(*) FILTER (WHERE delivered_at IS NULL AND refused_at IS NULL AND attempts > 0),
       count(*) FILTER (WHERE delivered_at IS NOT NULL)
           + (SELECT count(*) FROM outbox_archive WHERE delivered_at IS NOT NULL),
       count(*) FILTER (WHERE refused_at IS NOT NULL)
           + (SELECT count(*) FROM outbox_archive WHERE row ->> 'refused_at' IS NOT NULL)
FROM outbox
"""
