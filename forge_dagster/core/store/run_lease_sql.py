"""SQL for the leases Dagster runs hold while they do Forge's work (table run_leases, migration 013).

A run's lease is keyed by its Dagster run id. Its steps take and extend it; once a run is declared dead
(`dead_at` set) nothing takes or extends it again, so a process that comes back from the dead cannot
revive a run Dagster was told had failed.
"""

# A step of the run takes the lease (the first one creates it), adding its process's store owner.
TAKE_RUN_LEASE = """
INSERT INTO run_leases (run_id, job_name, partition_key, owners, heartbeat_at, lease_expires_at)
VALUES (%(run_id)s, %(job_name)s, %(partition)s, ARRAY[%(owner)s::text], now(),
        now() + make_interval(secs => %(ttl)s))
ON CONFLICT (run_id) DO UPDATE
SET owners = CASE WHEN %(owner)s::text = ANY(run_leases.owners) THEN run_leases.owners
                  ELSE run_leases.owners || %(owner)s::text END,
    heartbeat_at = now(), lease_expires_at = excluded.lease_expires_at
WHERE run_leases.dead_at IS NULL
RETURNING run_id
"""

# The heartbeat (and a step's end, which leaves one TTL for the next step to start).
RENEW_RUN_LEASE = """
UPDATE run_leases SET heartbeat_at = now(), lease_expires_at = now() + make_interval(secs => %(ttl)s)
WHERE run_id = %(run_id)s AND dead_at IS NULL
RETURNING run_id
"""

# Declare runs dead, fenced in one statement: a run whose lease expired, or (when `unleased` says its start
# timeout has passed) one that never took a lease. The conditions are checked on the row a concurrent take
# or renewal left (READ COMMITTED re-checks an updated row), so a run that just renewed is never declared
# dead, and a step that starts after this is refused by TAKE_RUN_LEASE.
DECLARE_RUNS_DEAD = """
WITH input AS (
    SELECT * FROM unnest(%(run_ids)s::text[], %(job_names)s::text[], %(partitions)s::text[],
                         %(unleased)s::boolean[]) AS t(run_id, job_name, partition_key, unleased)
), expired AS (
    UPDATE run_leases l SET dead_at = now(), reason = 'lease expired'
    FROM input i
    WHERE l.run_id = i.run_id AND l.dead_at IS NULL AND l.lease_expires_at < now()
    RETURNING l.run_id, l.owners, l.heartbeat_at, l.reason
), unleased AS (
    INSERT INTO run_leases (run_id, job_name, partition_key, lease_expires_at, dead_at, reason)
    SELECT i.run_id, i.job_name, i.partition_key, now(), now(), 'no lease taken within the start timeout'
    FROM input i
    WHERE i.unleased AND NOT EXISTS (SELECT 1 FROM run_leases l WHERE l.run_id = i.run_id)
    ON CONFLICT (run_id) DO NOTHING
    RETURNING run_id, owners, heartbeat_at, reason
)
SELECT run_id, owners, heartbeat_at, reason FROM expired
UNION ALL
SELECT run_id, owners, heartbeat_at, reason FROM unleased
"""

# Runs already declared dead (a later tick reports again what an interrupted one could not).
DEAD_RUNS = """
SELECT run_id, owners, heartbeat_at, reason FROM run_leases
WHERE run_id = ANY(%(run_ids)s::text[]) AND dead_at IS NOT NULL
"""

# Submissions a dead run's processes left unfinished become stale at once: the next build run resumes them
# (finds the provider's batch or creates it once) instead of waiting out the stale-submission delay.
EXPEDITE_DEAD_RUN_SUBMISSIONS = """
UPDATE batches SET updated_at = to_timestamp(0)
WHERE state = 'submitting' AND submitter = ANY(%(owners)s::text[])
RETURNING id
"""

# Leases of runs long over: the table keeps a week of history for the operator.
PRUNE_RUN_LEASES = """
DELETE FROM run_leases WHERE coalesce(heartbeat_at, taken_at) < now() - make_interval(days => %(days)s)
"""

# Which of these runs ever took a lease in this store (the runs of this store that no sensor tagged).
KNOWN_RUNS = "SELECT run_id FROM run_leases WHERE run_id = ANY(%(run_ids)s::text[])"
