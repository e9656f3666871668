"""Provider faults on the batch path, driven through the engine functions the Dagster assets and sensors
call (core/batch/building.py, core/batch/collection.py): build and submit, poll, collect, validate, round after round.

Two things stand in for the clock, as in the engine tests: jobs sent back with a backoff are made due at
once, and submissions left in `submitting` are resumed at once rather than after STALE_SUBMITTING_S.
Everything else is the engine against the simulator through the official SDKs.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import anthropic
import openai

from forge_dagster.core.batch.building import BuildReport, build_and_submit, resume_stale_submissions
from forge_dagster.core.batch.collection import collect_results, poll_open_batches, validate_batch
from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.models import ProviderError
from forge_dagster.core.platform.catalog import ProcessorCatalog, load_processors
from forge_dagster.core.platform.registry import load_catalog
from forge_dagster.core.providers.keyring import SIMULATOR_KEY, KeyRing, keys_from_env
from forge_dagster.core.providers.quota import PausePolicy, probe_due_keys
from forge_dagster.core.store import ForgeStore, JobSpec
from forge_dagster.resources.provider_keys import ProviderKeysResource
from tests.chaos import conservation
from tests.chaos.harness import ROOT, fresh_sim
from tests.helpers import make_due

FAST_PROBES = PausePolicy(base_s=0.2, cap_s=1.0, probe_budget_s=5.0, hold_recheck_s=0.2)
REVIEW = "review_sentiment"  # the Anthropic example processor


@dataclass
class FaultReport:
    """One fault scenario: outcomes, provider calls and duplicate provider batches."""

    scenario: str
    path: str
    jobs: int
    rounds: int = 0
    provider_calls: int = 0
    duplicate_batches: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # provider errors the driver saw, by class
    conservation: conservation.Conservation | None = None
    elapsed_s: float = 0.0

    @property
    def by_state(self) -> dict[str, int]:
        return self.conservation.by_state

    def row(self) -> dict:
        c = self.conservation
        return {"scenario": self.scenario, "path": self.path, "jobs": self.jobs,
                **{s: c.by_state.get(s, 0) for s in conservation.TERMINAL}, "open": len(c.open_jobs),
                "calls/job": round(self.provider_calls / self.jobs, 2), "duplicate batches": self.duplicate_batches,
                "accepted twice": len(c.accepted_twice), "rounds": self.rounds, "elapsed s": round(self.elapsed_s, 1)}


def batch_jobs(store: ForgeStore, n: int, *, max_attempts: int = 3, tag: str = "b",
               processors: tuple[str, ...] = ("ticket_triage", REVIEW)) -> list[int]:
    """n batch jobs, taking the given example processors in turn (OpenAI's ticket_triage, Anthropic's
    review_sentiment)."""
    catalog = load_processors()
    # Each prompt is longer than the one before, so a result's input tokens say which job it belongs to.
    inputs = {"ticket_triage": lambda i: {"subject": f"Ticket {i}", "body": "Export fails. " + "Details. " * i},
              REVIEW: lambda i: {"review": f"Review {i}: sturdy, but the battery is weak. " + "Also. " * i}}
    specs = [JobSpec(name, inputs[name](i), external_id=f"{tag}-{i}", processor_version=catalog[name].version,
                     max_attempts=max_attempts)
             for i in range(n) for name in [processors[i % len(processors)]]]
    return submit_jobs(store, specs, source="chaos").accepted


def simulator_ports(sim_url: str, timeout_s: float = 60.0):
    """The ports the Dagster resources build when no key is configured: the simulator's."""
    return ProviderKeysResource(simulator_url=sim_url, timeout_s=timeout_s).ports


def drive_batches(
    store: ForgeStore, catalog: ProcessorCatalog, ports, *, max_rounds: int = 40, ring: KeyRing | None = None,
    between: Callable[[int], None] | None = None, max_requests_per_batch: int | None = None,
    errors: Counter[str] | None = None,
) -> int:
    """Rounds of the batch path until no job is open (or `max_rounds`); returns the rounds run. A provider
    error in a step ends that step for the round, as a failed Dagster run would, and is counted."""
    errors = errors if errors is not None else Counter()

    def step(fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ProviderError as exc:
            errors[str(exc.error_class)] += 1
            return None

    for n in range(1, max_rounds + 1):
        step(resume_stale_submissions, store, catalog, ports, BuildReport(), older_than_s=0)
        step(build_and_submit, store, catalog, ports, max_requests_per_batch=max_requests_per_batch,
             quota=FAST_PROBES)
        polled = step(poll_open_batches, store, ports, quota=FAST_PROBES)
        for batch_id, _ in store.batches.ended_uncollected():
            if step(collect_results, store, ports, batch_id) is not None:
                validate_batch(store, catalog, batch_id)
        if between is not None:
            between(n)
        if ring is not None:
            probe_due_keys(store, ring, FAST_PROBES)
        if not any(store.jobs.counts().get(s) for s in conservation.OPEN):
            return n
        make_due(store)
        time.sleep(0.2 if polled is None else 0.02)
    return max_rounds


def duplicate_provider_batches(store: ForgeStore, sim_url: str) -> int:
    """Provider batches beyond one per Forge batch: OpenAI's by their forge_batch_id metadata, Anthropic's
    (which carry no metadata) by count against the Forge batches holding an Anthropic batch id."""
    with openai.OpenAI(api_key=SIMULATOR_KEY, base_url=sim_url + "/v1", max_retries=3) as client:
        ours = Counter((b.metadata or {}).get("forge_batch_id") for b in client.batches.list(limit=100))
    duplicates = sum(n - 1 for n in ours.values())
    with anthropic.Anthropic(api_key=SIMULATOR_KEY, base_url=sim_url, max_retries=3) as client:
        theirs = sum(1 for _ in client.messages.batches.list(limit=100))
    with store.transaction() as conn:
        known = conn.execute("SELECT count(*) FROM batches WHERE provider = 'anthropic' "
                             "AND provider_batch_id IS NOT NULL").fetchone()[0]
    return duplicates + max(0, theirs - known)


def run_batch_fault(
    store: ForgeStore, sim, name: str, *, jobs: int, knobs: dict | None = None, max_attempts: int = 3,
    between: Callable[[int, object, ForgeStore], None] | None = None, timeout_s: float = 60.0,
    max_requests_per_batch: int | None = None, max_rounds: int = 40,
) -> FaultReport:
    """Enqueue `jobs`, set the simulator's `knobs`, drive the batch path to the end; `between(round, sim,
    store)` runs after each round (to lift a fault, refill a quota, cancel a batch...)."""
    fresh_sim(sim, **(knobs or {}))
    batch_jobs(store, jobs, max_attempts=max_attempts)
    report = FaultReport(name, "batch", jobs)
    ports = simulator_ports(sim.url, timeout_s)
    ring = KeyRing(keys_from_env({}, simulator_url=sim.url, timeout_s=timeout_s))
    started = time.monotonic()
    report.rounds = drive_batches(store, load_catalog(store), ports, ring=ring, errors=report.errors,
                                  max_requests_per_batch=max_requests_per_batch, max_rounds=max_rounds,
                                  between=(lambda n: between(n, sim, store)) if between else None)
    report.elapsed_s = time.monotonic() - started
    report.provider_calls = len(sim.requests())
    report.duplicate_batches = duplicate_provider_batches(store, sim.url)
    with store.transaction() as conn:
        report.conservation = conservation.check(conn)
    return report


# -- a crash between upload and batch creation ------------------------------------------------------------
_SUBMITTER = (
    "import sys\n"
    "from forge_dagster.core.batch.building import build_and_submit\n"
    "from forge_dagster.core.platform.catalog import load_processors\n"
    "from forge_dagster.core.store import ForgeStore\n"
    "from tests.chaos.batch_faults import simulator_ports\n"
    "url, schema, sim = sys.argv[1:4]\n"
    "with ForgeStore(url, schema, pool_size=2) as store:\n"
    "    print(build_and_submit(store, load_processors(), simulator_ports(sim)), flush=True)\n"
)


def crash_between_upload_and_create(store: ForgeStore, database_url: str, schema: str, sim, *,
                                    jobs: int) -> FaultReport:
    """A builder process is killed while its OpenAI batch create is in flight (the file is uploaded, the
    intent persisted); the orphaned create still lands at the provider. The next run resumes the
    submission: it must find that batch and not create another."""
    fresh_sim(sim, route_latency_ms={"POST /v1/batches": 1500})
    batch_jobs(store, jobs, processors=("ticket_triage",))
    report = FaultReport("crash between upload and create", "batch", jobs)
    proc = subprocess.Popen([sys.executable, "-c", _SUBMITTER, database_url, schema, sim.url], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:  # uploaded, intent persisted, create on the wire
            uploaded = any(r["path"] == "/v1/files" and r["method"] == "POST" for r in sim.requests())
            with store.transaction() as conn:
                submitting = conn.execute("SELECT count(*) FROM batches WHERE state = 'submitting'").fetchone()[0]
            if uploaded and submitting and proc.poll() is None:
                time.sleep(0.3)  # the create is held by the provider
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the submitter did not reach the create: {proc.communicate()}")
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait(10)
    creates = lambda: sum(1 for r in sim.requests() if (r["method"], r["path"]) == ("POST", "/v1/batches"))  # noqa: E731
    deadline = time.monotonic() + 30
    while not creates() and time.monotonic() < deadline:  # a resume normally runs much later than this
        time.sleep(0.1)
    sim.configure(route_latency_ms={})
    started = time.monotonic()
    report.rounds = drive_batches(store, load_catalog(store), simulator_ports(sim.url), errors=report.errors)
    report.elapsed_s = time.monotonic() - started
    report.provider_calls = len(sim.requests())
    report.duplicate_batches = duplicate_provider_batches(store, sim.url)
    with store.transaction() as conn:
        report.conservation = conservation.check(conn)
    return report
