"""curator (bespokelabs-curator) in its online mode for the realtime benchmark. Curator pins its own versions
of the SDKs and LiteLLM, so it runs in an interpreter of its own: `FORGE_BENCH_CURATOR_PYTHON` names it
(e.g. a venv made with `pip install bespokelabs-curator`); unset, its rows are left out. One process
(curator runs its own event loop and tracker); timed by the runner from the call to its return."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

RUNNER = Path(__file__).with_name("curator_runner.py")


def curator_python() -> str | None:
    return os.environ.get("FORGE_BENCH_CURATOR_PYTHON") or None


def curator_available() -> bool:
    python = curator_python()
    return python is not None and subprocess.run([python, "-c", "import bespokelabs.curator"],
                                                 capture_output=True).returncode == 0


def curator_run(simulator_url: str, bodies: list[dict], rpm: int, concurrency: int) -> tuple[float, float, int]:
    """(seconds, CPU seconds of curator's process during the call, requests done)."""
    python = curator_python()
    assert python is not None
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "spec.json"
        spec.write_text(json.dumps({"bodies": bodies, "base_url": simulator_url + "/v1", "rpm": rpm,
                                    "concurrency": concurrency}))
        out = subprocess.run([python, str(RUNNER), str(spec)], capture_output=True, text=True, timeout=900,
                             cwd=tmp, env={**os.environ, "HOME": tmp})
    if out.returncode != 0:
        raise RuntimeError(f"curator failed: {out.stderr[-2000:]}")
    report = json.loads(out.stdout.strip().splitlines()[-1])
    return report["seconds"], report["cpu_s"], report["done"]
