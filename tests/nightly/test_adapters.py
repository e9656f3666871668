"""Adapter versions: semver folders, an atomically swapped `current` link, one-step rollback (also after a
crash between the history and the link), the CLI, and training that holds the GPU mutex with every Ollama
model unloaded and is stopped when the lock is lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading

import pytest

from forge_dagster.core.nightly.adapters import AdapterError, AdapterRegistry, train_adapter
from forge_dagster.core.nightly.gpu_mutex import GpuMutex, LockLost, connect
from forge_dagster.core.nightly.ollama import OllamaRuntime
from tests.helpers import ROOT, forge_env, forge_process, wait_until
from tests.nightly.conftest import MODEL


def _adapter(folder, marker: str):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": 8, "marker": marker}))
    (folder / "adapter_model.safetensors").write_bytes(marker.encode() * 100)
    return folder


@pytest.fixture
def registry(tmp_path):
    reg = AdapterRegistry(tmp_path / "adapters")
    for version in ("1.0.0", "1.1.0", "2.0.0"):
        reg.register(_adapter(tmp_path / "src" / version, version), "support", version)
    return reg


def _marker(registry) -> str:
    return json.loads((registry.current_path("support") / "adapter_config.json").read_text())["marker"]


def test_activate_then_rollback_restores_the_previous_version(registry):
    assert registry.current("support") is None
    assert registry.versions("support") == ["1.0.0", "1.1.0", "2.0.0"]
    registry.activate("support", "1.0.0")
    registry.activate("support", "2.0.0")
    registry.activate("support", "1.1.0")
    assert _marker(registry) == "1.1.0"
    assert registry.rollback("support") == ("1.1.0", "2.0.0")
    assert _marker(registry) == "2.0.0"
    assert registry.rollback("support") == ("2.0.0", "1.0.0")
    with pytest.raises(AdapterError, match="no earlier version"):
        registry.rollback("support")
    assert [v.version for v in registry.list("support") if v.active] == ["1.0.0"]
    assert os.readlink(registry.current_path("support")) == "1.0.0"  # relative link


def test_an_activation_interrupted_before_its_swap_is_not_replayed_by_rollback(registry):
    registry.activate("support", "1.0.0")
    registry.activate("support", "1.1.0")
    folder = registry.root / "support"
    # What a crash leaves between writing the history and swapping the link: history says 2.0.0 is
    # active, `current` still points to 1.1.0.
    registry._write_history(folder, ["1.0.0", "1.1.0", "2.0.0"], ["1.0.0", "1.1.0"])
    assert registry.current("support") == "1.1.0"
    assert registry.rollback("support") == ("1.1.0", "1.0.0")  # back, never forward to 2.0.0
    assert _marker(registry) == "1.0.0"


def test_a_rollback_interrupted_before_its_swap_is_not_undone_by_the_next_one(registry):
    for version in ("1.0.0", "1.1.0", "2.0.0"):
        registry.activate("support", version)
    folder = registry.root / "support"
    registry._write_history(folder, ["1.0.0", "1.1.0"], ["1.0.0", "1.1.0", "2.0.0"])  # swap never happened
    assert registry.current("support") == "2.0.0"
    assert registry.rollback("support") == ("2.0.0", "1.1.0")  # the rollback asked for, done once
    assert registry.rollback("support") == ("1.1.0", "1.0.0")
    assert _marker(registry) == "1.0.0"


def test_register_refuses_bad_versions_duplicates_and_names(registry, tmp_path):
    src = _adapter(tmp_path / "x", "x")
    for bad in ("1.0", "v1.0.0", "01.0.0", "1.0.0-beta"):
        with pytest.raises(AdapterError, match="semver"):
            registry.register(src, "support", bad)
    with pytest.raises(AdapterError, match="already registered"):
        registry.register(src, "support", "1.0.0")
    with pytest.raises(AdapterError, match="adapter name"):
        registry.register(src, "../escape", "1.0.0")
    assert not any(p.name.startswith(".staging") for p in (registry.root / "support").iterdir())


def test_rollback_swaps_current_atomically_under_a_concurrent_reader(registry):
    registry.activate("support", "1.0.0")
    # The reader runs in its own process and reads through `current` until told to stop.
    script = textwrap.dedent(f"""
        import json, os
        path = {str(registry.current_path("support") / "adapter_config.json")!r}
        both, stop = {str(registry.root / "both")!r}, {str(registry.root / "stop")!r}
        seen, broken, reads = set(), 0, 0
        while not os.path.exists(stop):
            try:
                with open(path) as f:
                    seen.add(json.load(f)["marker"])
            except (OSError, ValueError):
                broken += 1
            reads += 1
            if len(seen) == 2 and not os.path.exists(both):
                open(both, "w").close()
        print(json.dumps({{"seen": sorted(seen), "broken": broken, "reads": reads}}))
    """)
    reader = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    swaps = 0
    while swaps < 200 or not (registry.root / "both").exists():  # until the reader saw both, at least 200
        registry.activate("support", "2.0.0")
        registry.rollback("support")
        swaps += 1
        assert swaps < 20_000, "the reader never saw both versions"
    (registry.root / "stop").write_text("")
    out, _ = reader.communicate(timeout=60)
    report = json.loads(out)
    assert report["broken"] == 0, report
    assert report["seen"] == ["1.0.0", "2.0.0"]
    assert _marker(registry) == "1.0.0"


def test_cli_registers_lists_activates_and_rolls_back(database_url, schema, tmp_path):
    env = forge_env(database_url, schema, FORGE_HOME=str(tmp_path / "home"))

    def forge(*args: str) -> str:
        proc = forge_process(list(args), env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        return out

    registry = AdapterRegistry(tmp_path / "home" / "adapters")  # what an earlier release left behind
    registry.register(_adapter(tmp_path / "a", "one"), "triage", "0.1.0")
    registry.activate("triage", "0.1.0")
    forge("adapters", "register", str(_adapter(tmp_path / "b", "two")), "--name", "triage", "--version", "0.2.0")
    forge("adapters", "activate", "--name", "triage", "--version", "0.2.0")
    assert "rolled back 0.2.0 -> 0.1.0" in forge("adapters", "rollback", "--name", "triage")
    listed = json.loads(forge("adapters", "list", "--json"))
    assert [(v["version"], v["active"]) for v in listed] == [("0.1.0", True), ("0.2.0", False)]
    assert os.readlink(tmp_path / "home" / "adapters" / "triage" / "current") == "0.1.0"


def test_training_holds_the_gpu_mutex_with_every_model_unloaded(sim, store, redis_url, mutex_name, tmp_path,
                                                                 monkeypatch):
    runtime = OllamaRuntime(sim.ollama_host, MODEL)
    runtime.warm_up()
    trainer = tmp_path / "trainer.py"
    trainer.write_text(textwrap.dedent(f"""
        import json, os, sys
        import httpx
        from forge_dagster.core.nightly.gpu_mutex import GpuMutex
        out = sys.argv[1]
        loaded = httpx.get({sim.ollama_host!r} + "/api/ps").json()["models"]
        busy = GpuMutex({redis_url!r}, {mutex_name!r}).try_acquire() is None
        with open(os.path.join(out, "trainer_saw.json"), "w") as f:
            json.dump({{"loaded": loaded, "gpu_busy": busy, "fence": os.environ["FORGE_GPU_FENCE"]}}, f)
        with open(os.path.join(out, "adapter_model.safetensors"), "wb") as f:
            f.write(b"weights")
    """))
    registry = AdapterRegistry(tmp_path / "adapters")
    mutex = GpuMutex(redis_url, mutex_name, ttl_ms=5000)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the trainer imports forge_dagster, as a real trainer could
    result = train_adapter(mutex, runtime, registry, store.knowledge, name="support", version="1.0.0",
                           command=f"{sys.executable} {trainer} {{output}}", activate=True)
    saw = json.loads((registry.current_path("support") / "trainer_saw.json").read_text())
    assert saw == {"loaded": [], "gpu_busy": True, "fence": str(result["fence"])}
    assert result["unloaded"] == [MODEL] and registry.current("support") == "1.0.0"
    [recorded] = store.knowledge.gpu_results(mutex.key)
    assert recorded["kind"] == "adapter_training" and recorded["fence"] == result["fence"]
    assert mutex.holder() is None  # released after training


def test_training_stops_the_trainer_when_the_gpu_lock_is_lost(sim, store, redis_url, mutex_name, tmp_path):
    runtime = OllamaRuntime(sim.ollama_host, MODEL)
    marks = tmp_path / "trainer.log"
    trainer = tmp_path / "stubborn_trainer.py"
    trainer.write_text(textwrap.dedent(f"""
        import os, signal, time
        def on_term(signum, frame):
            with open({str(marks)!r}, "a") as f:
                f.write("term\\n")  # a trainer that ignores SIGTERM: it must be killed after the grace
        signal.signal(signal.SIGTERM, on_term)
        with open({str(marks)!r}, "a") as f:
            f.write(f"started {{os.getpid()}}\\n")
        time.sleep(120)  # would hold the GPU for two minutes
    """))
    registry = AdapterRegistry(tmp_path / "adapters")
    mutex = GpuMutex(redis_url, mutex_name, ttl_ms=600)
    outcome = []

    def train() -> None:
        try:
            train_adapter(mutex, runtime, registry, store.knowledge, name="support", version="1.0.0",
                          command=f"{sys.executable} {trainer}", stop_grace_s=0.5)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    worker = threading.Thread(target=train)
    worker.start()
    wait_until(lambda: marks.exists() and "started" in marks.read_text(), timeout_s=30, what="the trainer")
    pid = int(marks.read_text().split()[1])
    connect(redis_url).set(mutex.key, "another holder", px=30_000)  # the lock is taken mid-training
    worker.join(timeout=30)
    assert not worker.is_alive(), "training kept running after the lock was lost"
    assert len(outcome) == 1 and isinstance(outcome[0], LockLost), outcome
    assert "term" in marks.read_text()  # asked to stop first ...
    with pytest.raises(ProcessLookupError):  # ... then killed, and reaped
        os.kill(pid, 0)
    assert registry.versions("support") == [] and store.knowledge.gpu_results(mutex.key) == []
