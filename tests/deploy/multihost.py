"""The multihost scenario (tests/deploy/cluster.py): realtime jobs and a batch round drain with `forge work`
on hosts C and D and Dagster's runs on C, while host D fails in one of two ways:

- `kill`: every `forge work` process on D SIGKILLed at once, as a lost host;
- `partition`: D's link taken down while its workers hold leases and write outcomes, until C has taken over
  every job D held; then the link comes back and D's workers are stopped (SIGTERM): whatever they write
  late for those jobs must be refused by the lease fence.

C carries on throughout. Measured: the split of finished work by host and mode, the jobs D held, the time
from the fault until C claimed each again (a lease TTL, or the server's idle-in-transaction timeout for a
row a cut-off transaction still locked), transitions D wrote for a job after C took it over (must be 0), D's
late results refused by the fence, the conservation check (tests/chaos/conservation.py), `forge health`
on C and D, and the namespaces left after the teardown (must be none).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import psycopg

from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.models import JobSpec
from forge_dagster.core.platform.catalog import load_processors
from forge_dagster.core.store import ForgeStore, db
from tests.chaos import conservation
from tests.chaos.harness import percentile
from tests.deploy.cluster import Cluster, open_cluster, wait_for

BATCH_PROCESSORS = ("ticket_triage", "review_sentiment")  # OpenAI and Anthropic: two providers' collections


@dataclass
class MultihostReport:
    scenario: str
    realtime_jobs: int
    batch_jobs: int
    workers: dict[str, int]  # host -> `forge work` processes
    concurrency: int
    lease_ttl_s: float
    split: dict[str, dict[str, int]] = field(default_factory=dict)  # host -> mode -> jobs it finished
    held: list[int] = field(default_factory=list)  # jobs D's workers held at the fault
    reclaim_s: list[float] = field(default_factory=list)  # per held job: fault -> claimed again elsewhere
    reclaimed_by: dict[str, int] = field(default_factory=dict)  # host -> held jobs it claimed again
    partition_s: float | None = None  # how long D's link was down
    d_writes_after_takeover: list[int] = field(default_factory=list)  # jobs D changed after C took them
    d_late_refused: int = 0  # results D's workers came back with, refused by the fence (their stats)
    d_stats: list[dict] = field(default_factory=list)
    health: dict[str, int] = field(default_factory=dict)  # host -> `forge health` exit code
    health_down: list[str] = field(default_factory=list)
    drain_s: float | None = None  # from the first job enqueued to all terminal
    conservation: conservation.Conservation | None = None
    leftover_namespaces: list[str] = field(default_factory=list)
    errors: str = ""

    @property
    def problems(self) -> list[str]:
        found = list(self.conservation.problems) if self.conservation else ["no conservation check"]
        if self.d_writes_after_takeover:
            found.append(f"D wrote after C's takeover: jobs {self.d_writes_after_takeover[:5]}")
        if len(self.reclaim_s) != len(self.held):
            found.append(f"{len(self.held) - len(self.reclaim_s)} of D's {len(self.held)} jobs never claimed again")
        if self.leftover_namespaces:
            found.append(f"namespaces left after the teardown: {self.leftover_namespaces}")
        if self.health_down:
            found.append(f"forge health down: {self.health_down}")
        return found

    def row(self) -> dict:
        c = self.conservation
        return {"scenario": self.scenario, "realtime jobs": self.realtime_jobs, "batch jobs": self.batch_jobs,
                "workers C/D": f"{self.workers.get('host-c', 0)}/{self.workers.get('host-d', 0)}",
                "split": {h: m for h, m in sorted(self.split.items())}, "D held": len(self.held),
                "reclaimed by": self.reclaimed_by,
                "reclaim p50 s": _round(percentile(self.reclaim_s, 0.5)),
                "reclaim max s": _round(max(self.reclaim_s, default=None)),
                "partition s": _round(self.partition_s), "D late refused": self.d_late_refused,
                "D writes after takeover": len(self.d_writes_after_takeover),
                "lost": len(c.open_jobs) if c else None, "accepted twice": len(c.accepted_twice) if c else None,
                "stale accepted": len(c.stale_transitions) if c else None, "by state": c.by_state if c else None,
                "lease ttl s": self.lease_ttl_s, "drain s": _round(self.drain_s),
                "namespaces left": len(self.leftover_namespaces)}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def enqueue(store: ForgeStore, realtime: int, batch: int) -> None:
    """`realtime` ticket jobs in realtime mode and `batch` jobs across both providers' processors."""
    versions = {name: p.version for name, p in load_processors().items()}
    specs = [JobSpec("ticket_triage", {"subject": f"Ticket {i}", "body": "The export button does nothing."},
                     external_id=f"rt-{i}", processor_version=versions["ticket_triage"], mode="realtime",
                     max_attempts=5) for i in range(realtime)]
    for i in range(batch):
        name = BATCH_PROCESSORS[i % 2]
        payload = ({"subject": f"Batch ticket {i}", "body": "Login fails."} if name == "ticket_triage"
                   else {"review": f"Review {i}: works well."})
        specs.append(JobSpec(name, payload, external_id=f"b-{i}", processor_version=versions[name], mode="batch",
                             max_attempts=5))
    submit_jobs(store, specs, source="multihost")


class Observer:
    """The operator's reads, over host A's unix socket."""

    def __init__(self, cluster: Cluster) -> None:
        self.conn = psycopg.connect(cluster.local_url, autocommit=True, options="-c search_path=forge",
                                    application_name="forge-multihost-observer")

    def one(self, text: str, params=()):
        return self.conn.execute(text, params).fetchone()

    def all(self, text: str, params=()) -> list[tuple]:
        return self.conn.execute(text, params).fetchall()

    def now(self) -> float:
        return self.one("SELECT extract(epoch FROM clock_timestamp())::float8")[0]

    def open_jobs(self) -> int:
        return self.one("SELECT count(*) FROM jobs WHERE state = ANY(%s)", (list(conservation.OPEN),))[0]

    def running_on(self, host: str) -> list[int]:
        return [r[0] for r in self.all("SELECT id FROM jobs WHERE state = 'running' AND starts_with(lease_owner, %s) "
                                       "ORDER BY id", (host + ":",))]

    def realtime_done(self) -> int:
        return self.one("SELECT count(*) FROM jobs WHERE mode = 'realtime' AND state = ANY(%s)",
                        (list(conservation.TERMINAL),))[0]

    def taken_over(self, held: list[int], since: float) -> dict[int, tuple[str, float]]:
        """Of `held`, the jobs claimed again by another host since `since`: job -> (actor, epoch)."""
        rows = self.all("SELECT DISTINCT ON (job_id) job_id, actor, extract(epoch FROM at)::float8 FROM job_events "
                        "WHERE job_id = ANY(%s) AND to_state IN ('running', 'claimed') AND at >= to_timestamp(%s) "
                        "AND NOT starts_with(coalesce(actor, ''), 'host-d:') ORDER BY job_id, id", (held, since))
        return {job: (actor, at) for job, actor, at in rows}

    def d_after_takeover(self, takeovers: dict[int, tuple[str, float]]) -> list[int]:
        """Jobs D changed after another host claimed them (the fence must make this empty)."""
        if not takeovers:
            return []
        rows = self.all("SELECT e.job_id, extract(epoch FROM e.at)::float8 FROM job_events e WHERE e.job_id = ANY(%s) "
                        "AND starts_with(coalesce(e.actor, ''), 'host-d:')", (list(takeovers),))
        return sorted({job for job, at in rows if at > takeovers[job][1]})

    def split(self, worker_pids: set[int]) -> dict[str, dict[str, int]]:
        """Terminal transitions by host and mode, and by process kind: `forge work` (a pid of `worker_pids`)
        or a Dagster run (C's code server launches them), read from each actor (host:pid:random)."""
        out: dict[str, dict[str, int]] = {}
        for actor, mode, n in self.all(
                "SELECT coalesce(e.actor, '?'), j.mode, count(*) FROM job_events e "
                "JOIN jobs j ON j.id = e.job_id WHERE e.to_state = ANY(%s) GROUP BY 1, 2",
                (list(conservation.TERMINAL),)):
            host, _, rest = actor.partition(":")
            pid = rest.split(":", 1)[0]
            kind = "forge work" if pid.isdigit() and int(pid) in worker_pids else "Dagster run"
            key = f"{host} {kind}" if host.startswith("host-") else host
            out.setdefault(key, {})[mode] = out.get(key, {}).get(mode, 0) + n
        return out

    def close(self) -> None:
        self.conn.close()


def run_multihost(scenario: str, *, realtime: int, batch: int, workers_c: int = 2, workers_d: int = 2,
                  concurrency: int = 16, lease_ttl_s: float = 5.0, latency_ms: int = 100, dagster: bool = True,
                  drain_timeout_s: float = 600.0, subnet: str = "10.231.0") -> MultihostReport:
    """Build the hosts, run `scenario` (kill or partition), tear everything down; the report."""
    assert scenario in ("kill", "partition"), scenario
    report = MultihostReport(scenario, realtime, batch, {"host-c": workers_c, "host-d": workers_d}, concurrency,
                             lease_ttl_s)
    cluster = open_cluster(lease_ttl_s=lease_ttl_s, latency_ms=latency_ms, dagster=dagster, subnet=subnet)
    ok = False
    try:
        _run(cluster, report, scenario, workers_c, workers_d, concurrency, drain_timeout_s)
        ok = not report.problems
    finally:
        report.errors = cluster.errors()
        if not ok:
            report.errors += f"\n(logs of every process kept in {cluster.root / 'logs'})"
        report.leftover_namespaces = cluster.close(keep_logs=not ok)
    return report


def _run(cluster: Cluster, report: MultihostReport, scenario: str, workers_c: int, workers_d: int,
         concurrency: int, drain_timeout_s: float) -> None:
    db.migrate(cluster.local_url, "forge")
    obs = Observer(cluster)
    try:
        skip = () if cluster.dagster else ("dagster_daemon",)
        for host in ("host-c", "host-d"):  # the readiness probe: A's PostgreSQL and Redis seen from C and D
            code, checks = cluster.health(host, skip=skip)
            report.health[host] = code
            report.health_down += [f"{host}:{c['name']}: {c['detail']}" for c in checks.get("checks", [])
                                   if c["status"] == "down"]
        with ForgeStore(cluster.local_url, "forge", pool_size=2) as store:
            enqueue(store, report.realtime_jobs, report.batch_jobs)
        started = time.monotonic()
        for _ in range(workers_c):
            cluster.start_worker("host-c", concurrency)
        d_workers = [cluster.start_worker("host-d", concurrency) for _ in range(workers_d)]
        # The fault lands once a third of the realtime jobs is done and D is busy (holding leases).
        wait_for(lambda: obs.realtime_done() >= report.realtime_jobs // 3 and len(obs.running_on("host-d")) >= concurrency,
                 timeout_s=300, what="a third of the realtime jobs done, host D's workers busy")
        if scenario == "kill":
            for w in d_workers:
                cluster.kill(w)
            fault_at = obs.now()
            report.held = obs.running_on("host-d")
            takeovers = _wait_taken(obs, report.held, fault_at, cluster.lease_ttl_s, "D's killed workers")
        else:
            cluster.net.partition("host-d")
            cut = time.monotonic()
            fault_at = obs.now()
            report.held = obs.running_on("host-d")  # read after the cut: nothing of D's lands any more
            takeovers = _wait_taken(obs, report.held, fault_at, cluster.lease_ttl_s, "D behind the partition")
            cluster.net.heal("host-d")
            report.partition_s = time.monotonic() - cut
            cluster.stop_workers("host-d", timeout_s=300)  # back on the network: their late writes, fenced
            report.d_stats = [w.stats() or {} for w in d_workers]
            report.d_late_refused = sum(s.get("lease_lost", 0) for s in report.d_stats)
        report.reclaim_s = [at - fault_at for _, at in takeovers.values()]
        for actor, _ in takeovers.values():
            host = actor.split(":", 1)[0]
            report.reclaimed_by[host] = report.reclaimed_by.get(host, 0) + 1
        wait_for(lambda: obs.open_jobs() == 0, timeout_s=drain_timeout_s, every_s=0.5,
                 what="every job terminal")
        report.drain_s = time.monotonic() - started
        cluster.stop_workers()
        report.d_writes_after_takeover = obs.d_after_takeover(takeovers)
        report.split = obs.split({w.proc.pid for w in cluster.retired})
        report.conservation = conservation.check(obs.conn)
    finally:
        obs.close()


def _wait_taken(obs: Observer, held: list[int], since: float, ttl_s: float, whose: str) -> dict[int, tuple[str, float]]:
    """Wait until every job of `held` was claimed again by another host; their takeovers."""
    if not held:
        return {}

    def all_taken() -> dict[int, tuple[str, float]] | None:
        taken = obs.taken_over(held, since)
        return taken if len(taken) == len(held) else None

    return wait_for(all_taken, timeout_s=120 + 10 * ttl_s, what=f"another host taking over the {len(held)} jobs of {whose}")
