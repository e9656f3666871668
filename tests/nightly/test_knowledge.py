"""Memories in PostgreSQL: full-text search, deduplication, fenced writes, the weekly compression and
`forge memories search`."""

from __future__ import annotations

import json
import subprocess

import dagster as dg
import pytest

from forge_dagster.assets.nightly import weekly_memory_digest
from forge_dagster.core.nightly.gpu_mutex import GpuMutex, LockLost
from forge_dagster.core.nightly.knowledge import NewMemory, remember, search
from forge_dagster.core.store.knowledge_sql import SEARCH_MEMORIES
from forge_dagster.core.store.knowledge_types import FencedOut
from tests.helpers import forge_env, forge_process, wait_until
from tests.nightly.conftest import model_calls


def _memory(title: str, content: str, source: str = "health", tags=("health",)) -> NewMemory:
    return NewMemory(source, title, content, tuple(tags), "2030-02-01")


def test_search_finds_memories_by_stemmed_words_and_phrases_best_first(store):
    repo = store.knowledge
    remember(repo, [
        _memory("Ollama timeouts at night", "The local model timed out while loading; warm-up took 40 s."),
        _memory("Disk nearly full", "Only 3 GB were left on the volume that holds PostgreSQL."),
        _memory("Rate limits", "OpenAI answered 429 for an hour; jobs were retried after retry-after.",
                source="forge:failures", tags=("jobs", "failure")),
    ])
    assert [m.title for m in search(repo, "timeout")] == ["Ollama timeouts at night"]  # stemmed
    assert [m.title for m in search(repo, '"retry-after" -disk')] == ["Rate limits"]
    assert {m.title for m in search(repo, "postgresql or ollama")} == {"Ollama timeouts at night",
                                                                       "Disk nearly full"}
    assert [m.title for m in search(repo, "jobs", tag="failure")] == ["Rate limits"]
    assert search(repo, "nothing matches this") == []


def test_search_is_served_by_the_gin_index(store):
    remember(store.knowledge, [_memory(f"finding {i}", f"content number {i}") for i in range(50)])
    with store.transaction() as conn:
        conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN " + SEARCH_MEMORIES,
            {"query": "content", "limit": 5, "tag": None, "include_compressed": False}))
    assert "memories_search_idx" in plan


def test_the_same_finding_is_stored_once(store):
    repo = store.knowledge
    first = remember(repo, [_memory("Disk nearly full", "3 GB left"), _memory("Disk nearly full", "3 GB left")])
    again = remember(repo, [_memory("Disk  nearly FULL", "3 GB   left")])  # case and spacing do not matter
    assert len(first) == 1 and again == []
    assert repo.count_memories() == (1, 1)


def test_a_memory_written_under_a_lost_lease_is_rejected(store, redis_url, mutex_name):
    repo = store.knowledge
    mutex = GpuMutex(redis_url, mutex_name, ttl_ms=300)
    old = mutex.acquire(renew=False)  # never renewed: lost after 300 ms
    wait_until(lambda: mutex.holder() is None, timeout_s=10, what="the old lease to expire")
    new = mutex.acquire(renew=False)
    remember(repo, [_memory("written by the new holder", "fence is higher")], new)
    with pytest.raises(LockLost):  # the old holder checks its lease and stops before the database
        remember(repo, [_memory("late write", "from the old holder")], old)
    with pytest.raises(FencedOut):  # and the store refuses its fence whatever the holder believes
        repo.write_memories([_memory("late write", "from the old holder")], fence=old.fencing)
    assert [m.title for m in search(repo, "holder")] == ["written by the new holder"]
    assert search(repo, "late write") == []
    assert new.release()


def test_weekly_consolidation_folds_the_weeks_memories_into_digests(resources, store, sim):
    repo = store.knowledge
    remember(repo, [_memory(f"disk warning {i}", f"{10 - i} GB free on day {i}") for i in range(3)]
             + [_memory("new paper on LoRA", "https://example.org/lora", source="research:feed", tags=("research",)),
                _memory("lonely finding", "only one from forge", source="forge:jobs", tags=("jobs",))])
    with store.transaction() as conn:  # one memory from last month stays as it is
        conn.execute("UPDATE memories SET created_at = now() - interval '30 days' WHERE title = 'disk warning 0'")
    result = dg.materialize([weekly_memory_digest], resources=resources)
    meta = result.asset_materializations_for_node("weekly_memory_digest")[0].metadata
    assert (meta["digests"].value, meta["folded"].value) == (1, 2)  # health: 2 this week; others alone
    assert len(model_calls(sim)) == 1
    digest = search(repo, "disk warning", tag="weekly")
    assert len(digest) == 1 and digest[0].source == "weekly:health" and digest[0].fence
    # Folded memories leave the default search; --all still finds them.
    assert {m.title for m in search(repo, "disk")} == {"disk warning 0", digest[0].title}
    assert len(search(repo, "disk", include_compressed=True)) == 4
    # A second run the same week finds nothing left to fold.
    again = dg.materialize([weekly_memory_digest], resources=resources)
    assert again.asset_materializations_for_node("weekly_memory_digest")[0].metadata["digests"].value == 0


def test_cli_searches_memories(database_url, schema, store):
    remember(store.knowledge, [_memory("Redis restarted at 03:10", "The GPU mutex waited 20 s for Redis.")])
    env = forge_env(database_url, schema)
    proc = forge_process(["memories", "search", "redis mutex", "--json"], env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    found = json.loads(out)
    assert [m["title"] for m in found] == ["Redis restarted at 03:10"]
    assert "mode=" in err  # the one line saying where the data lives
