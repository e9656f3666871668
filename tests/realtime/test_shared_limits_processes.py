"""A key's limit holds across worker processes that reserve their slots in blocks: three processes, each
with its own interpreter, store connections and key ring, call one key of the simulator (in a process of
its own, so its request times are when calls arrived); in no stretch of the run do they together call
faster than the key's limit allows, and no call is refused."""

from __future__ import annotations

import bisect
import multiprocessing

from forge_dagster.core.providers.ratelimit import KeyLimiter

from .conftest import chat_calls, enqueue
from .pacing_worker import work

CATCH_UP_S = KeyLimiter().burst_s  # slots that came due while a process was busy may go within this


def test_worker_processes_reserving_slots_in_blocks_stay_within_the_keys_limit_together(
    remote_sim, store, database_url, schema,
):
    rpm, processes, jobs = 1200, 3, 150
    remote_sim.configure(latency_ms=100, rpm_limit=rpm)
    enqueue(store, jobs)
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    workers = [ctx.Process(target=work, args=(database_url, schema, remote_sim.url, rpm, 16, results))
               for _ in range(processes)]
    for p in workers:
        p.start()
    reports = [results.get(timeout=180) for _ in workers]
    for p in workers:
        p.join(30)
        assert p.exitcode == 0, f"worker exited with {p.exitcode}"

    assert store.jobs.counts() == {"succeeded": jobs}
    assert sum(r["calls"] for r in reports) == jobs
    assert sum(r["calls"] >= 10 for r in reports) >= 2, reports  # they worked side by side
    calls = chat_calls(remote_sim)
    assert [c["status"] for c in calls].count(429) == 0
    stamps = [c["ts"] for c in calls]
    limit = rpm / 60
    for window in (1.0, 3.0):
        busiest = max(bisect.bisect_left(stamps, t + window) - i for i, t in enumerate(stamps))
        assert busiest <= limit * (window + CATCH_UP_S) + 1, (
            f"{busiest} calls within {window} s: above the key's limit of {limit:.0f}/s together")
    assert any(r["slots_reserved"] > r["reservations"] for r in reports), reports  # blocks were taken


def test_unused_slots_of_a_block_go_back_only_while_no_reservation_came_after_them(store):
    """A block's unused slots return to the key's schedule, so the next reservation is as early as if they
    had never been taken; once another reservation came after the block, giving back changes nothing (those
    slots may lie under someone else's)."""
    schedule = store.pacing.schedule("openai", "f" * 16)
    schedule.ensure(600, None)  # 10/s: slots 60 / (600 x 0.97) s apart
    args = {"rpm": None, "tpm": None, "tokens": 0, "correction": 0.0, "void": False, "headroom": 0.97,
            "burst_s": 0.0}
    block = schedule.reserve(**args, slots=8)
    assert block.slots == 8 and block.step > 0
    assert schedule.give_back(block, 7)
    after = schedule.reserve(**args)
    assert abs(after.admit_at - (block.admit_at + block.step)) < 1e-6  # right after the one slot used

    later = schedule.reserve(**args, slots=4)
    schedule.reserve(**args)  # another process's reservation after the block
    assert not schedule.give_back(later, 3)
    last = schedule.reserve(**args)
    assert last.admit_at >= later.admit_at + 5 * later.step - 1e-6
