"""The per-process cache: one value per key, built once under concurrent first use, bounded when asked."""

import threading
import time

from forge_dagster.core.process_cache import ProcessCache


def test_concurrent_first_uses_build_one_value_per_key():
    cache: ProcessCache[str, object] = ProcessCache("test")
    builds: list[str] = []
    start = threading.Barrier(8)
    seen: list[object] = []

    def use(key: str) -> None:
        start.wait()

        def build() -> object:
            builds.append(key)
            time.sleep(0.05)  # a slow build: the others arrive while it runs
            return object()

        seen.append(cache.get_or_create(key, build))

    threads = [threading.Thread(target=use, args=("a" if i % 2 else "b",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(builds) == ["a", "b"]
    assert len({id(v) for v in seen}) == 2
    assert cache.get("a") is not cache.get("b")


def test_a_failed_build_is_not_remembered():
    cache: ProcessCache[str, int] = ProcessCache("test")

    def fail() -> int:
        raise RuntimeError("server away")

    try:
        cache.get_or_create("k", fail)
    except RuntimeError:
        pass
    assert cache.get("k") is None
    assert cache.get_or_create("k", lambda: 7) == 7


def test_a_bounded_cache_empties_when_full():
    cache: ProcessCache[int, int] = ProcessCache("memo", max_entries=2)
    for key in range(3):
        cache.get_or_create(key, lambda key=key: key * 10)
    assert len(cache) == 1 and cache.get(2) == 20
    cache.put(3, 30)
    assert sorted(cache.values()) == [20, 30]
