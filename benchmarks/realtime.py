"""Realtime: Forge's realtime executor beside its peers (the OpenAI cookbook's parallel-request pattern,
LiteLLM's Router with rpm/tpm limits, and curator's online mode when installed), in the same run, on the
same simulator (its own process), with the same limits, on one process and on every core.

    python -m benchmarks.realtime [--database-url URL] [--quick] [--repeat R] [--systems a,b]

Each run starts one process per core measured (realtime_systems.py); each gets ready, then all start
together. Forge: jobs enqueued as realtime in a fresh store schema, every process running
`RealtimeExecutor.run_sync(until_idle=True)` with `concurrency` calls in flight, all on one key whose
schedule they share through the store. A peer process runs its share of the same request bodies with
the same concurrency and its share of the key's RPM (it has no way to share one). `forge-httpx` is Forge
on the SDK's httpx transport instead of aiohttp (the A/B of the transport, in the same rounds). Reported
per scenario and system: requests per second (jobs over wall time, the common start to the last process's
end), the ratio to the limit min(processes x concurrency / latency, RPM / 60) and to the cookbook, CPU
per request of the measured processes (user + system), the simulator's CPU per request (it shares the
cores), and the 429s the simulator sent. Systems alternate within each repeat. The peers' buckets start
full, as in the cookbook: on a key whose 60 s window is empty they may send up to a minute's worth at
once, which the simulator (a sliding 60 s window, like the providers) admits; Forge paces from the first
call, so in a run shorter than a minute a peer can exceed RPM / 60 and Forge cannot.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks._common import database, fresh_schema
from benchmarks.realtime_curator import curator_available, curator_run
from benchmarks.realtime_systems import PROCESSOR, Part, bodies, payload, run_part
from benchmarks.report import Ratio, Row, render_table
from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.platform.registry import load_catalog
from forge_dagster.core.store import ForgeStore, JobSpec
from forge_dagster.simulator.process import SimulatorProcess

LATENCY_MS = 100
CONCURRENCY = 64
SYSTEMS = ("forge", "forge-httpx", "cookbook", "litellm", "curator")


@dataclass(frozen=True)
class Scenario:
    name: str
    rpm: int
    jobs_per_process: int
    processes: int

    @property
    def jobs(self) -> int:
        return self.jobs_per_process * self.processes

    @property
    def limit(self) -> float:
        """Requests per second the limits allow: min(processes x concurrency / latency, RPM / 60)."""
        return min(self.processes * CONCURRENCY / (LATENCY_MS / 1000), self.rpm / 60)


@dataclass(frozen=True)
class Sample:
    rate: float
    cpu_ms_per_request: float
    simulator_cpu_ms_per_request: float
    rejected_429: int


def scenarios(quick: bool, cores: int) -> list[Scenario]:
    n = 300 if quick else 1_000
    rpm_jobs = 60 if quick else 200
    out = [Scenario("latency-bound", 60_000, n, 1), Scenario("RPM-bound", 1_200, rpm_jobs, 1)]
    if cores > 1:
        out[1:1] = [Scenario(f"latency-bound, {cores} processes", 60_000 * cores, n, cores)]
        out.append(Scenario(f"RPM-bound, {cores} processes", 1_200, rpm_jobs // cores, cores))
    return out


def _run(system: str, sim: SimulatorProcess, url: str, scenario: Scenario) -> Sample:
    """One run of `system` on `scenario`: its processes ready, started together, timed to the last."""
    if system == "curator":  # one process of its own interpreter; the simulator's CPU includes its startup
        requests = bodies(Part(system, sim.url, scenario.rpm, CONCURRENCY, 0, scenario.jobs))
        sim_cpu = sim.cpu_seconds()
        seconds, cpu, done = curator_run(sim.url, requests, scenario.rpm, CONCURRENCY)
        if done != scenario.jobs:
            raise RuntimeError(f"curator on {scenario.name}: {done} of {scenario.jobs} done")
        return _sample(sim, scenario, seconds, cpu, sim.cpu_seconds() - sim_cpu)
    with fresh_schema(url, "realtime") as schema:
        if system.startswith("forge"):
            with ForgeStore(url, schema, pool_size=2) as store:
                store.migrate()
                version = load_catalog(store)[PROCESSOR].version  # registered: outputs are checked against it
                submit_jobs(store, [JobSpec(PROCESSOR, payload(i), processor_version=version, mode="realtime")
                                    for i in range(scenario.jobs)])
        share = scenario.rpm if system.startswith("forge") else max(1, scenario.rpm // scenario.processes)
        parts = [Part(system, sim.url, share, CONCURRENCY, i * scenario.jobs_per_process, scenario.jobs_per_process,
                      url, schema) for i in range(scenario.processes)]
        ctx = multiprocessing.get_context("spawn")
        ready, start, results = ctx.Queue(), ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=run_part, args=(part, ready, start, results)) for part in parts]
        for p in procs:
            p.start()
        problems = [problem for problem in (ready.get(timeout=300) for _ in procs) if problem]
        if problems:
            start.set()
            raise RuntimeError(f"{system}: a process failed before the start: {problems}")
        sim_cpu, began = sim.cpu_seconds(), time.time()
        start.set()
        reports = [results.get(timeout=900) for _ in procs]
        sim_cpu = sim.cpu_seconds() - sim_cpu
        for p in procs:
            p.join(60)
    errors = [r[3] for r in reports if r[3]]
    done = sum(r[2] for r in reports)
    if errors or done != scenario.jobs:
        raise RuntimeError(f"{system} on {scenario.name}: {done} of {scenario.jobs} done; {errors}")
    seconds = max(r[1] for r in reports) - began
    return _sample(sim, scenario, seconds, sum(r[0] for r in reports), sim_cpu)


def _sample(sim: SimulatorProcess, scenario: Scenario, seconds: float, cpu_s: float, sim_cpu_s: float) -> Sample:
    statuses = [r["status"] for r in sim.requests() if r["path"] == "/v1/chat/completions"]
    return Sample(scenario.jobs / seconds, 1000 * cpu_s / scenario.jobs, 1000 * sim_cpu_s / scenario.jobs,
                  statuses.count(429))


def rows(url: str, *, quick: bool, repeat: int, systems: tuple[str, ...] = SYSTEMS,
         cores: int | None = None) -> list[Row]:
    """Every system on each scenario, alternating within each repeat, each run on a fresh simulator state."""
    cores = cores or os.cpu_count() or 1
    if "curator" in systems and not curator_available():
        print("curator: not installed (FORGE_BENCH_CURATOR_PYTHON unset or failing): its rows are left out")
        systems = tuple(s for s in systems if s != "curator")
    out = []
    with SimulatorProcess() as sim:
        for scenario in scenarios(quick, cores):
            names = [s for s in systems if not (s == "forge-httpx" and scenario.name.startswith("RPM"))]
            samples: dict[str, list[Sample]] = {name: [] for name in names}
            for _ in range(repeat):
                for name in names:
                    sim.reset()
                    sim.configure(latency_ms=LATENCY_MS, rpm_limit=scenario.rpm)
                    samples[name].append(_run(name, sim, url, scenario))
            what = (f"{scenario.jobs:,} ticket_triage calls, {LATENCY_MS} ms latency, {scenario.processes} "
                    f"process(es) x concurrency {CONCURRENCY}, RPM {scenario.rpm:,}: limit {scenario.limit:,.0f}/s")
            for name, mine in samples.items():
                rates = [s.rate for s in mine]
                ratios = [Ratio.to_constant("limit", rates, scenario.limit)]
                for peer in ("cookbook", "litellm", "curator"):
                    if name.startswith("forge") and peer in samples:
                        ratios.append(Ratio.paired(peer, rates, [s.rate for s in samples[peer]]))
                details = {"CPU ms/request": _spread([s.cpu_ms_per_request for s in mine]),
                           "simulator CPU ms/request": _spread([s.simulator_cpu_ms_per_request for s in mine]),
                           "429s": max(s.rejected_429 for s in mine)}
                out.append(Row(f"realtime {scenario.name}", name, what, "req/s", rates, ratios, details))
    return out


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url")
    parser.add_argument("--quick", action="store_true", help="fewer calls per scenario")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--json", help="also write the rows and the machine's load to this file")
    args = parser.parse_args(argv)
    load = os.getloadavg()
    with database(args.database_url) as (url, _):
        measured = rows(url, quick=args.quick, repeat=args.repeat, systems=tuple(args.systems.split(",")))
    print(render_table(measured))
    machine = {"cores": os.cpu_count(), "load average at start": [round(x, 2) for x in load],
               "load average at end": [round(x, 2) for x in os.getloadavg()]}
    print(machine)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "rows": [r.as_dict() for r in measured]}, indent=1))


if __name__ == "__main__":
    main()
