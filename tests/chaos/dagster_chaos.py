"""Dagster-path chaos: the batch pipeline run by a real `dagster dev` tree on Forge's store and Dagster's
storage in PostgreSQL, with the simulator for the provider, while JSONL files are dropped in the inbox; one
process SIGKILLed at a time as the batches are taken in, built, submitted and collected:
- `intake`: a build run (its worker and its step) as soon as its step holds the run's lease, as it begins
  to take in the large file (the kill log says how many jobs were in by then);
- `run_worker`: a collection run's worker alone (its step, orphaned, finishes and leaves the run STARTED);
- `step`: a collection run's step process alone (its worker sees it die and fails the run);
- `daemon`: the daemon (`dagster dev` goes down with it and is started again, as a supervisor would);
- `tree`: the whole process group (webserver, daemon, code server, runs), then started again.
Then the tree runs on until every job is terminal.

Measured, beyond the conservation check: every dropped line taken in exactly once or refused with its
reason; no Forge run left STARTED without a live process once the drain ends; runs reported dead; provider
batches created against Forge batches (never twice); the highest attempt of any job (1: no crash of ours
spent one); and the time from the last kill until every job is terminal.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import psutil

from forge_dagster.core.runtime import write_dagster_yaml
from tests.chaos import conservation
from tests.chaos.dagster_tree import DagsterTree, owner_pid
from tests.chaos.harness import fresh_sim, own_database, schema_conn, worker_env

TERMINAL = set(conservation.TERMINAL)
BAD_LINES = ("{not json", '{"id": "x-unknown", "processor": "no_such_processor", "input": {}}')


@dataclass
class DagsterChaosReport:
    jobs: int
    lease_ttl_s: float
    kills: list[dict] = field(default_factory=list)  # {"target", "pid", "at" (s from start), "note"}
    restarts: int = 0
    elapsed_s: float = 0.0
    last_kill_to_terminal_s: float | None = None
    drop_to_terminal_s: float | None = None  # from the first file dropped to every job terminal
    lines: int = 0
    lines_refused: int = 0
    lines_taken_twice: list[str] = field(default_factory=list)
    lines_missing: list[str] = field(default_factory=list)
    bad_lines_unreported: list[str] = field(default_factory=list)
    runs_by_status: dict[str, int] = field(default_factory=dict)
    runs_reported_dead: int = 0
    stuck_runs: list[str] = field(default_factory=list)
    forge_batches: int = 0
    provider_batches_created: int = 0
    max_attempt: int = 0
    conservation: conservation.Conservation | None = None

    @property
    def problems(self) -> list[str]:
        found = list(self.conservation.problems) if self.conservation else ["no conservation check"]
        for label, items in (("lines taken in twice", self.lines_taken_twice),
                             ("lines neither taken in nor refused", self.lines_missing),
                             ("bad lines without a reason", self.bad_lines_unreported),
                             ("runs left STARTED without a live process", self.stuck_runs)):
            if items:
                found.append(f"{len(items)} {label}: {items[:5]}")
        if self.provider_batches_created != self.forge_batches:
            found.append(f"{self.provider_batches_created} provider batches for {self.forge_batches} Forge batches")
        if self.max_attempt > 1:
            found.append(f"a job reached attempt {self.max_attempt} with a fault-free provider")
        return found


def _lines(prefix: str, n: int, processors=("ticket_triage", "review_sentiment")) -> list[str]:
    out = []
    for i in range(n):
        processor = processors[i % len(processors)]
        payload = ({"subject": f"Ticket {i}", "body": "The export button does nothing."}
                   if processor == "ticket_triage" else {"review": f"Review {i}: works well."})
        out.append(json.dumps({"id": f"{prefix}-{i}", "processor": processor, "input": payload}))
    return out


def drop_file(inbox: Path, name: str, lines: list[str]) -> None:
    """Write a JSONL file beside the inbox and move it in whole, as a careful producer does."""
    inbox.mkdir(parents=True, exist_ok=True)
    tmp = inbox.parent / f".{name}.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    tmp.rename(inbox / name)


class Scenario:
    """One run of the scenario: the tree, the store's schema, Dagster's instance, the files dropped."""

    def __init__(self, database_url: str, schema: str, dagster_url: str, sim, home: Path, report: DagsterChaosReport,
                 *, sensor_interval_s: int, start_timeout_s: float) -> None:
        self.url, self.schema, self.sim, self.home, self.report = database_url, schema, sim, home, report
        ttl_s = report.lease_ttl_s
        self.dagster_home = home / "dagster"
        write_dagster_yaml(self.dagster_home, dagster_url)
        env = worker_env(database_url, schema, sim.url, home, DAGSTER_HOME=str(self.dagster_home),
                         FORGE_RUN_LEASE_TTL_S=f"{ttl_s:g}", FORGE_SENSOR_INTERVAL_S=str(sensor_interval_s),
                         FORGE_RUN_RETRY_DELAY_S=str(sensor_interval_s),
                         FORGE_RUN_START_TIMEOUT_S=f"{start_timeout_s:g}",
                         # the next step's cold start on a loaded machine: 6 TTLs, not the 60 s default
                         FORGE_RUN_STEP_HANDOVER_S=f"{6 * ttl_s:g}")
        self.tree = DagsterTree(env, Path(tempfile.mkdtemp(prefix="forge-dagster-chaos-")))
        self.instance = dg.DagsterInstance.from_config(str(self.dagster_home))
        self.files: dict[str, list[str]] = {}
        self.kills_at: list[float] = []
        self.t0 = time.monotonic()

    @property
    def inbox(self) -> Path:
        return self.home / "inbox"

    def query(self, text: str, params=()) -> list[tuple]:
        with schema_conn(self.url, self.schema) as conn:
            return conn.execute(text, params).fetchall()

    def drop(self, name: str, good: int) -> None:
        lines = _lines(name.split(".")[0], good)
        lines[len(lines) // 2:len(lines) // 2] = list(BAD_LINES)  # refused, with their reasons
        self.files[name] = lines
        drop_file(self.inbox, name, lines)

    def leased_steps(self, job_name: str, owners_at_most: int | None = None) -> list[int]:
        """Pids of live step processes holding a lease of a live run of `job_name`."""
        steps = {p.pid for p in self.tree.find("step")}
        rows = self.query("SELECT owners FROM run_leases WHERE job_name = %s AND dead_at IS NULL "
                          "AND lease_expires_at > now()", (job_name,))
        return [pid for (owners,) in rows if owners_at_most is None or len(owners) <= owners_at_most
                for pid in map(owner_pid, owners[-1:]) if pid in steps]

    def target(self, kind: str) -> list[int] | None:
        """The pids to SIGKILL for `kind` now, or None while there is none to kill."""
        tree = self.tree
        if kind in ("daemon", "tree"):  # the current tree's daemon: one a kill just took is not counted
            daemons = [p for p in tree.find("daemon") if tree.running() and _group(p.pid) == tree.proc.pid]
            return [daemons[0].pid] if daemons and self.open_work() else None
        if kind == "intake":  # the build run's step while it takes in the file, and its worker
            steps = self.leased_steps("build_batches", owners_at_most=1)
            if not steps:
                return None
            worker = next((p.ppid() for p in tree.find("step") if p.pid == steps[0]), None)
            return [steps[0], *([worker] if worker else [])]
        steps = self.leased_steps("collect_batch")
        if not steps:
            return None
        if kind == "step":
            return steps[:1]
        worker = next((p.ppid() for p in tree.find("step") if p.pid == steps[0]), None)
        return [worker] if worker else None

    def kill(self, kind: str, deadline_s: float) -> None:
        deadline = time.monotonic() + deadline_s
        while True:
            self.restart_if_down()
            pids = self.target(kind)
            if pids:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"no {kind} process to kill within {deadline_s:g}s; "
                                     f"jobs {self.counts()}")
            time.sleep(0.2)
        if kind == "tree":
            pids = [self.tree.proc.pid]  # the process group's leader: the whole group goes
            self.tree.kill_tree()
        else:
            for pid in pids:
                self.tree.kill(pid)
            for pid in pids:  # gone before the next kill is chosen
                _wait_gone(pid)
        self.kills_at.append(time.monotonic())
        self.report.kills.append({"target": kind, "pids": pids, "at": round(time.monotonic() - self.t0, 1),
                                  "jobs": self.counts()})

    def restart_if_down(self) -> None:
        if self.tree.ensure_running():
            self.report.restarts += 1

    def counts(self) -> dict[str, int]:
        return dict(self.query("SELECT state, count(*) FROM jobs GROUP BY state"))

    def open_work(self) -> bool:
        counts = self.counts()
        return bool(set(counts) - TERMINAL) or any(self.inbox.glob("*.jsonl"))

    def drained(self) -> bool:
        counts = self.counts()
        taken = sum(counts.values())
        return not (set(counts) - TERMINAL) and not any(self.inbox.glob("*.jsonl")) and taken >= self.expected

    @property
    def expected(self) -> int:
        return sum(len(lines) - len(BAD_LINES) for lines in self.files.values())

    def stuck(self) -> list[str]:
        """Forge runs STARTED in Dagster's storage with no live process holding their lease."""
        runs = self.instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED],
                                                            tags={"forge/run_lease": "true"}))
        live_pids = {p.pid for p in self.tree.members()}
        leases = dict(self.query("SELECT run_id, owners FROM run_leases WHERE run_id = ANY(%s)",
                                 ([r.run_id for r in runs],)))
        return [r.run_id for r in runs if not {owner_pid(o) for o in leases.get(r.run_id, [])} & live_pids]


def _group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _wait_gone(pid: int, timeout_s: float = 30.0) -> None:
    """Wait until a SIGKILLed process is gone (or only a zombie its parent has yet to reap)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} still alive {timeout_s:g}s after SIGKILL")
        time.sleep(0.05)


def run_dagster_chaos(database_url: str, schema: str, server_url: str, sim, home: Path, *, large: int,
                      small: int, kills: list[str], drops_after: int = 1, kill_gap_s: float = 0.0,
                      ttl_s: float = 5.0, sensor_interval_s: int = 3, start_timeout_s: float = 30.0,
                      kill_deadline_s: float = 120.0, drain_timeout_s: float = 300.0) -> DagsterChaosReport:
    """The scenario: `large` lines dropped at once, then `kills` in order, at least `kill_gap_s` apart, each
    of the first `drops_after` followed by a file of `small` more lines."""
    fresh_sim(sim, batch_processing_s=2.0)
    with own_database(server_url, "forge_dagster_chaos") as dagster_url:
        report = DagsterChaosReport(jobs=large + small * min(drops_after, len(kills)), lease_ttl_s=ttl_s)
        scenario = Scenario(database_url, schema, dagster_url, sim, home, report,
                            sensor_interval_s=sensor_interval_s, start_timeout_s=start_timeout_s)
        try:
            scenario.tree.start()
            scenario.drop("large.jsonl", large)
            dropped = time.monotonic()
            for n, kind in enumerate(kills):
                if scenario.kills_at:
                    time.sleep(max(0.0, scenario.kills_at[-1] + kill_gap_s - time.monotonic()))
                scenario.kill(kind, kill_deadline_s)
                if n < drops_after and small:
                    scenario.drop(f"more{n}.jsonl", small)
            deadline = time.monotonic() + drain_timeout_s
            while not scenario.drained():
                scenario.restart_if_down()
                if time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            done = time.monotonic()
            if scenario.drained():
                report.drop_to_terminal_s = round(done - dropped, 1)
                if scenario.kills_at:
                    report.last_kill_to_terminal_s = round(done - scenario.kills_at[-1], 1)
            stuck_deadline = time.monotonic() + 7 * ttl_s + start_timeout_s + 4 * sensor_interval_s  # handover 6 TTLs
            while (stuck := scenario.stuck()) and time.monotonic() < stuck_deadline:
                time.sleep(0.5)
            report.stuck_runs = stuck
            report.elapsed_s = round(time.monotonic() - scenario.t0, 1)
            _account(scenario, report)
        finally:
            scenario.tree.stop()
            scenario.instance.dispose()
    return report


def _account(scenario: Scenario, report: DagsterChaosReport) -> None:
    """Read the outcome: lines, runs, batches, attempts and the conservation check."""
    for name, lines in scenario.files.items():
        report.lines += len(lines)
        taken = dict(scenario.query("SELECT external_id, count(*) FROM jobs WHERE source = %s GROUP BY 1",
                                    (f"file:{name}",)))
        reported = {}
        for path in sorted((scenario.inbox / "processed").glob(f"{name}*report*.json")):
            for entry in json.loads(path.read_text()).get("rejected", []):
                reported.setdefault(entry["line"], entry["error"])
        for number, line in enumerate(lines, start=1):
            if line in BAD_LINES:
                report.lines_refused += 1
                if not reported.get(number):
                    report.bad_lines_unreported.append(f"{name}:{number}")
                continue
            count = taken.get(json.loads(line)["id"], 0)
            if count > 1:
                report.lines_taken_twice.append(f"{name}:{number}")
            elif count == 0:
                report.lines_missing.append(f"{name}:{number}")
    runs = scenario.instance.get_runs(filters=dg.RunsFilter(tags={"forge/run_lease": "true"}))
    for run in runs:
        report.runs_by_status[run.status.value] = report.runs_by_status.get(run.status.value, 0) + 1
    report.runs_reported_dead = sum(1 for r in runs if "forge/dead_run" in r.tags)
    report.forge_batches = scenario.query("SELECT count(DISTINCT provider_batch_id) FROM batches")[0][0]
    creates = [r for r in scenario.sim.requests() if r["method"] == "POST" and r.get("status") == 200
               and r["path"] in ("/v1/batches", "/v1/messages/batches")]
    report.provider_batches_created = len(creates)
    report.max_attempt = scenario.query("SELECT coalesce(max(attempt), 0) FROM jobs")[0][0]
    with schema_conn(scenario.url, scenario.schema) as conn:
        report.conservation = conservation.check(conn)
