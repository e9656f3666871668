"""SQL for the live fleet: `forge work` processes registering, beating and stopping (table `workers`), and
what the console shows of them with the Dagster run leases beside."""

REGISTER_WORKER = """
INSERT INTO workers (kind, owner, host, pid, detail)
VALUES (%(kind)s, %(owner)s, %(host)s, %(pid)s, %(detail)s)
RETURNING id
"""

# The heartbeat also notes how many leases the worker's owner holds (a partial index holds leased rows only).
BEAT_WORKER = """
UPDATE workers SET heartbeat_at = now(),
       holding = (SELECT count(*) FROM jobs WHERE lease_owner = %(owner)s AND state IN ('claimed', 'running'))
WHERE id = %(id)s AND stopped_at IS NULL
RETURNING id
"""

STOP_WORKER = "UPDATE workers SET stopped_at = now(), holding = 0 WHERE id = %(id)s AND stopped_at IS NULL"

# Workers that beat within `window_s` or stopped within it (the page shows who just left), newest first.
# `alive`: beating within `stale_s` and not stopped. `holding_now` is read from the jobs at this moment.
RECENT_WORKERS = """
SELECT w.id, w.kind, w.owner, w.host, w.pid, w.detail, w.started_at, w.heartbeat_at, w.stopped_at,
       (w.stopped_at IS NULL AND w.heartbeat_at > now() - make_interval(secs => %(stale_s)s)) AS alive,
       round(extract(epoch FROM now() - w.heartbeat_at))::bigint AS heartbeat_age_s,
       coalesce(h.n, 0) AS holding_now
FROM workers w
LEFT JOIN (SELECT lease_owner, count(*) AS n FROM jobs WHERE state IN ('claimed', 'running')
           GROUP BY lease_owner) h ON h.lease_owner = w.owner AND w.stopped_at IS NULL
WHERE w.heartbeat_at > now() - make_interval(secs => %(window_s)s)
   OR w.stopped_at > now() - make_interval(secs => %(window_s)s)
ORDER BY w.id DESC
LIMIT 200
"""

# Dagster runs doing Forge's work, by their leases in the store: alive while the lease has not expired.
RECENT_RUN_LEASES = """
SELECT run_id, job_name, partition_key, owners, taken_at, heartbeat_at, lease_expires_at, dead_at, reason,
       (dead_at IS NULL AND lease_expires_at > now()) AS alive,
       (SELECT count(*) FROM jobs j WHERE j.lease_owner = ANY (r.owners) AND j.state IN ('claimed', 'running'))
           AS holding_now
FROM run_leases r
WHERE lease_expires_at > now() - make_interval(secs => %(window_s)s)
   OR dead_at > now() - make_interval(secs => %(window_s)s)
ORDER BY taken_at DESC
LIMIT 100
"""

# Leases taken over in the last `window_s`: by a claim after expiry, or freed by the sweep.
TAKEOVERS_SINCE = """
SELECT count(*) FILTER (WHERE reason LIKE 'reclaimed: lease expired%%') AS reclaimed,
       count(*) FILTER (WHERE actor = 'sweeper' AND from_state IN ('claimed', 'running')) AS swept
FROM job_events
WHERE at > now() - make_interval(secs => %(window_s)s)
"""

PRUNE_WORKERS = """
DELETE FROM workers WHERE coalesce(stopped_at, heartbeat_at) < now() - make_interval(days => %(days)s)
"""
