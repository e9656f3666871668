"""The systems of the realtime benchmark, each as one process's part of a run: it gets ready (imports, client,
request bodies), waits for the common start, runs its share of the calls and reports its CPU time and when
it finished. `benchmarks/realtime.py` starts one such process per core it measures.

- forge: `RealtimeExecutor` on the store (claims, shared pacing, call, fail-closed validation, outcomes),
  over the SDK's aiohttp transport, or httpx (`forge-httpx`) for the A/B of the transport.
- cookbook: the OpenAI cookbook's parallel-processor pattern (parallel_processor.py), JSONL in and out.
- litellm: LiteLLM's `Router` with the deployment's rpm/tpm and its usage-based routing (which holds
  calls to them), `acompletion` under a semaphore of the same concurrency, results appended to JSONL.
- curator: bespokelabs-curator's online mode, when it is installed (its own interpreter:
  `FORGE_BENCH_CURATOR_PYTHON`); see realtime_curator.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.parallel_processor import process_requests
from forge_dagster.core.batch.shaping import custom_id_for
from forge_dagster.core.platform.catalog import load_processors
from forge_dagster.core.platform.registry import load_catalog
from forge_dagster.core.providers.requests import render_request
from forge_dagster.core.realtime import KeyRing, RealtimeConfig, RealtimeExecutor, keys_from_env
from forge_dagster.core.store import ForgeStore

PROCESSOR = "ticket_triage"  # OpenAI chat completions with a json_schema response format


@dataclass(frozen=True)
class Part:
    """One process's share of a run."""

    system: str
    simulator_url: str
    rpm: int  # the limit this process is given (Forge: the key's, shared; peers: their share of it)
    concurrency: int
    first: int  # its requests: payloads first .. first + count - 1
    count: int
    database_url: str = ""
    schema: str = ""


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def payload(i: int) -> dict:
    return {"subject": f"Ticket {i}", "body": f"The export button does nothing since update {i % 50}."}


def bodies(part: Part) -> list[dict]:
    processor = load_processors()[PROCESSOR]
    return [render_request(processor, payload(i), custom_id_for(i + 1, 1)).body
            for i in range(part.first, part.first + part.count)]


def run_part(part: Part, ready, start, results) -> None:
    """Get ready and say so on `ready` (None, or the error), wait for `start` (a multiprocessing Event),
    run, and put (cpu_s, finished_at, done, error) on `results`."""
    try:
        go = _ready(part)
    except BaseException as exc:
        ready.put(f"{part.system}: {type(exc).__name__}: {exc}")
        return
    ready.put(None)
    start.wait()
    try:
        cpu = cpu_s()
        done = go()
        results.put((cpu_s() - cpu, time.time(), done, None))
    except BaseException as exc:  # reported to the parent, which fails the run
        results.put((0.0, time.time(), 0, f"{part.system}: {type(exc).__name__}: {exc}"))


def _ready(part: Part):
    if part.system in ("forge", "forge-httpx"):
        return _forge(part, "httpx" if part.system == "forge-httpx" else "aiohttp")
    if part.system == "cookbook":
        return _cookbook(part)
    if part.system == "litellm":
        return _litellm(part)
    raise ValueError(f"unknown system {part.system}")


def _forge(part: Part, transport: str):
    store = ForgeStore(part.database_url, part.schema, pool_size=8)
    env = {"OPENAI_API_KEY": "sk-bench-forge", "OPENAI_BASE_URL": part.simulator_url + "/v1",
           "OPENAI_RPM": str(part.rpm)}
    ring = KeyRing(keys_from_env(env, timeout_s=30), transport=transport)
    ring.port(ring.for_provider("openai")[0])  # the SDK is imported now, not inside the timing
    executor = RealtimeExecutor(store, load_catalog(store), ring, RealtimeConfig(concurrency=part.concurrency))

    def go() -> int:
        with store:
            return executor.run_sync(until_idle=True).succeeded
    return go


def _cookbook(part: Part):
    import openai

    tmp = Path(tempfile.mkdtemp())
    requests, results = tmp / "requests.jsonl", tmp / "results.jsonl"
    requests.write_text("".join(json.dumps(b) + "\n" for b in bodies(part)))

    async def run() -> int:
        client = openai.AsyncOpenAI(api_key="sk-bench-peer", base_url=part.simulator_url + "/v1", max_retries=0,
                                    timeout=30)
        try:
            status = await process_requests(requests, results, client, max_requests_per_minute=part.rpm,
                                            max_tokens_per_minute=10_000_000, max_in_flight=part.concurrency)
        finally:
            await client.close()
        return status.succeeded
    return lambda: asyncio.run(run())


def _litellm(part: Part):
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch of the price map: offline
    from litellm import Router

    requests = bodies(part)
    model = requests[0]["model"]
    router = Router(model_list=[{"model_name": "bench", "litellm_params": {
        "model": f"openai/{model}", "api_base": part.simulator_url + "/v1", "api_key": "sk-bench-litellm",
        "rpm": part.rpm, "tpm": 10_000_000}}], routing_strategy="usage-based-routing-v2", num_retries=5)
    out = Path(tempfile.mkdtemp()) / "results.jsonl"

    async def run() -> int:
        gate = asyncio.Semaphore(part.concurrency)

        async def one(body: dict) -> bool:
            async with gate:
                response = await router.acompletion(model="bench", **{k: v for k, v in body.items() if k != "model"})
            with out.open("a") as f:
                f.write(json.dumps(response.model_dump()) + "\n")
            return True
        return sum(await asyncio.gather(*(one(b) for b in requests)))
    return lambda: asyncio.run(run())
