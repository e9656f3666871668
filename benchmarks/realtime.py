"""Realtime: Forge's realtime executor beside the OpenAI cookbook's parallel-request pattern, both on the
official `openai` client, against the simulator with a fixed latency and an RPM limit.

    python -m benchmarks.realtime [--database-url URL] [--quick] [--repeat R]

Forge: jobs enqueued as realtime in a fresh store schema, run by `RealtimeExecutor.run_sync(until_idle=True)`
with the default `RealtimeConfig` (what `forge work` runs): claims, the key's limiter (its
schedule shared with other processes through the store), the call, fail-closed validation, outcomes
written back. In the latency-bound scenario a third row runs Forge with `shared_pacing=False` (each process
paces alone), which shows what the shared schedule costs. Peer: `parallel_processor.process_requests` on the
same rendered request bodies, from a JSONL file to a JSONL file (no database, no validation). Same limits
for both: `concurrency` calls in flight, the key's RPM. Reported per scenario: requests per second (jobs
over wall time, first claim or read to last result written), the ratio to the limit min(concurrency /
latency, RPM / 60), Forge over the peer, CPU time of this process per request (user + system; the
simulator runs in its own process; PostgreSQL's CPU is not counted), and the 429s the simulator sent.
Scenarios: latency-bound (the RPM far above what the concurrency allows) and RPM-bound. The peer's buckets
start full, as in the cookbook: on a key whose 60 s window is empty it may send up to a minute's worth
at once, which the simulator (a sliding 60 s window, like the providers) admits; Forge paces from the
first call (a new worker adds nothing to what others sent in the last minute), so in a run shorter
than a minute the peer can exceed RPM / 60 and Forge cannot.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks._common import database, fresh_schema
from benchmarks.parallel_processor import process_requests
from benchmarks.report import Ratio, Row, render_table
from forge_dagster.core.batch.shaping import custom_id_for
from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.platform.catalog import load_processors
from forge_dagster.core.platform.registry import load_catalog
from forge_dagster.core.providers.requests import render_request
from forge_dagster.core.realtime import KeyRing, RealtimeConfig, RealtimeExecutor, keys_from_env
from forge_dagster.core.store import ForgeStore, JobSpec
from forge_dagster.simulator.process import SimulatorProcess

PROCESSOR = "ticket_triage"  # OpenAI chat completions with a json_schema response format
LATENCY_MS = 100
CONCURRENCY = 64


@dataclass(frozen=True)
class Scenario:
    name: str
    rpm: int
    jobs: int

    @property
    def limit(self) -> float:
        """Requests per second the limits allow: min(concurrency / latency, RPM / 60)."""
        return min(CONCURRENCY / (LATENCY_MS / 1000), self.rpm / 60)


@dataclass(frozen=True)
class Sample:
    rate: float
    cpu_ms_per_request: float
    rejected_429: int


def scenarios(quick: bool) -> list[Scenario]:
    if quick:
        return [Scenario("latency-bound", 60_000, 600), Scenario("RPM-bound", 1_200, 60)]
    return [Scenario("latency-bound", 60_000, 2_000), Scenario("RPM-bound", 1_200, 200)]


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _payload(i: int) -> dict:
    return {"subject": f"Ticket {i}", "body": f"The export button does nothing since update {i % 50}."}


def _chat_statuses(sim: SimulatorProcess) -> list[int]:
    return [r["status"] for r in sim.requests() if r["path"] == "/v1/chat/completions"]


def forge_run(sim: SimulatorProcess, url: str, scenario: Scenario, run: int, *, shared_pacing: bool = True,
              transport: str = "auto", **config) -> Sample:
    env = {"OPENAI_API_KEY": f"sk-bench-forge-{run}", "OPENAI_BASE_URL": sim.openai_base_url,
           "OPENAI_RPM": str(scenario.rpm)}
    with fresh_schema(url, "realtime") as schema, ForgeStore(url, schema, pool_size=8) as store:
        store.migrate()
        catalog = load_catalog(store)  # registered: an accepted output is checked against the registry's schema
        version = catalog[PROCESSOR].version
        submit_jobs(store, [JobSpec(PROCESSOR, _payload(i), processor_version=version, mode="realtime")
                       for i in range(scenario.jobs)])
        ring = KeyRing(keys_from_env(env, timeout_s=30), transport=transport)
        ring.port(ring.for_provider("openai")[0])  # the SDK is imported now, not inside the timing
        config = RealtimeConfig(concurrency=CONCURRENCY, shared_pacing=shared_pacing, **config)
        executor = RealtimeExecutor(store, catalog, ring, config)
        cpu, started = _cpu_s(), time.perf_counter()
        stats = executor.run_sync(until_idle=True)
        seconds, cpu = time.perf_counter() - started, _cpu_s() - cpu
        counts = store.jobs.counts()
    if counts != {"succeeded": scenario.jobs} or stats.succeeded != scenario.jobs:
        raise RuntimeError(f"forge realtime: {counts}, expected {scenario.jobs} succeeded")
    return Sample(scenario.jobs / seconds, 1000 * cpu / scenario.jobs, _chat_statuses(sim).count(429))


def peer_run(sim: SimulatorProcess, scenario: Scenario, run: int) -> Sample:
    import openai

    processor = load_processors()[PROCESSOR]
    with tempfile.TemporaryDirectory() as tmp:
        requests, results = Path(tmp) / "requests.jsonl", Path(tmp) / "results.jsonl"
        requests.write_text("".join(
            json.dumps(render_request(processor, _payload(i), custom_id_for(i + 1, 1)).body) + "\n"
            for i in range(scenario.jobs)))

        async def go():
            client = openai.AsyncOpenAI(api_key=f"sk-bench-peer-{run}", base_url=sim.openai_base_url,
                                        max_retries=0, timeout=30)
            try:
                return await process_requests(requests, results, client, max_requests_per_minute=scenario.rpm,
                                              max_tokens_per_minute=10_000_000, max_in_flight=CONCURRENCY)
            finally:
                await client.close()

        cpu, started = _cpu_s(), time.perf_counter()
        status = asyncio.run(go())
        seconds, cpu = time.perf_counter() - started, _cpu_s() - cpu
        written = sum(1 for _ in results.open())
    if status.succeeded != scenario.jobs or written != scenario.jobs:
        raise RuntimeError(f"peer: {status}, {written} results written, expected {scenario.jobs}")
    return Sample(scenario.jobs / seconds, 1000 * cpu / scenario.jobs, _chat_statuses(sim).count(429))


def rows(url: str, *, quick: bool, repeat: int) -> list[Row]:
    """Both systems on each scenario, alternating repeat by repeat, each run on a fresh simulator state."""
    out = []
    with SimulatorProcess() as sim:
        run = 0
        for scenario in scenarios(quick):
            systems: dict[str, list[Sample]] = {"forge": [], "peer": []}
            if scenario.name == "latency-bound":
                systems["local"] = []
            for _ in range(repeat):
                for name, samples in systems.items():
                    sim.reset()
                    sim.configure(latency_ms=LATENCY_MS, rpm_limit=scenario.rpm)
                    samples.append(peer_run(sim, scenario, run) if name == "peer" else
                                   forge_run(sim, url, scenario, run, shared_pacing=name == "forge"))
                    run += 1
            what = (f"{scenario.jobs:,} ticket_triage calls, {LATENCY_MS} ms latency, concurrency {CONCURRENCY}, "
                    f"RPM {scenario.rpm:,}: limit {scenario.limit:,.0f}/s")
            forge_how = "claim, pace, call, validate, record in PostgreSQL"
            peer = systems["peer"]
            shown = [("forge realtime executor", systems["forge"], peer, forge_how),
                     ("cookbook parallel processor", peer, None, "token buckets, JSONL in/out")]
            if "local" in systems:
                shown.insert(1, ("forge, pacing per process", systems["local"], peer,
                                 forge_how + "; shared_pacing=False"))
            for label, mine, other, how in shown:
                rates = [s.rate for s in mine]
                ratios = [Ratio.to_constant("limit", rates, scenario.limit)]
                if other is not None:
                    ratios.append(Ratio.paired("cookbook peer", rates, [s.rate for s in other]))
                details = {"CPU ms/request": round(statistics.median(s.cpu_ms_per_request for s in mine), 2),
                           "429s": max(s.rejected_429 for s in mine)}
                out.append(Row(f"realtime {scenario.name}", label, f"{what}; {how}", "req/s", rates, ratios, details))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url")
    parser.add_argument("--quick", action="store_true", help="fewer calls per scenario")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with database(args.database_url) as (url, _):
        print(render_table(rows(url, quick=args.quick, repeat=args.repeat)))


if __name__ == "__main__":
    main()
