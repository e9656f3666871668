"""A real browser on the operator's view: `forge dev` on the embedded default, the Dagster UI in headless
Chromium (Chrome DevTools protocol), Forge's asset graph and the demo's runs on screen.

Marked `browser` (deselect with -m "not browser"); needs Debian's `chromium` (`apt-get install -y chromium`).
Screenshots go to docs/.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.helpers import ROOT, wait_until
from tests.operations.cdp import Browser, chromium_path

pytestmark = pytest.mark.browser

FORGE_GROUPS = ("intake", "batch_pipeline", "operations")
PIPELINE_ASSETS = ("job_intake", "provider_batches", "provider_results", "validated_outputs")
OPERATOR_ASSETS = ("job_ledger", "batch_ledger", "cost_ledger", "provider_credentials", "outbox_backlog",
                   "batch_archive")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _forge(args: list[str], env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "forge_dagster.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, **kwargs)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def embedded_home():
    """A FORGE_HOME of its own: the embedded PostgreSQL (which may run as its own user) lives in it."""
    home = Path(tempfile.mkdtemp(prefix="forge-browser-"))
    home.chmod(0o755)
    prefixes = ("FORGE_", "DAGSTER_", "OPENAI_", "ANTHROPIC_", "OLLAMA_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(FORGE_HOME=str(home), PYTHONPATH=str(ROOT))
    yield env
    _forge(["stop"], env, timeout=60)
    shutil.rmtree(home, ignore_errors=True)


def test_dagster_ui_shows_forges_asset_graph_and_the_demos_runs(embedded_home):
    binary = chromium_path()
    assert binary, "chromium is not installed: apt-get install -y chromium"
    env = embedded_home
    demo = _forge(["demo", "--jobs", "20", "--json"], env, timeout=600)
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert json.loads(demo.stdout.strip().splitlines()[-1])["mode"] == "embedded"

    port, sim_port = _free_port(), _free_port()
    dev = subprocess.Popen([sys.executable, "-m", "forge_dagster.cli", "dev", "--port", str(port),
                            "--sim-port", str(sim_port)], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    browser = None
    try:
        ui = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(ui + "/server_info"), timeout_s=180, every_s=1, what="the Dagster webserver")
        browser = Browser(binary)
        location = f"{ui}/locations/forge_dagster.definitions/asset-groups"

        browser.goto(ui + "/asset-groups")  # the global lineage: one box per asset group
        wait_until(lambda: all(g in browser.text() for g in FORGE_GROUPS), timeout_s=120, every_s=1,
                   what=f"the asset groups {FORGE_GROUPS}")
        browser.click_button("Skip")  # Dagster's first-visit newsletter dialog, if it shows

        browser.goto(f"{location}/batch_pipeline/lineage")
        wait_until(lambda: all(name in browser.text() for name in PIPELINE_ASSETS), timeout_s=60, every_s=1,
                   what=f"the batch pipeline's graph to show {PIPELINE_ASSETS}")
        browser.screenshot(ROOT / "docs" / "dagster-asset-graph.png")

        browser.goto(f"{location}/operations/list")
        wait_until(lambda: all(name in browser.text() for name in OPERATOR_ASSETS), timeout_s=60, every_s=1,
                   what=f"the operator's view to show {OPERATOR_ASSETS}")

        browser.goto(ui + "/runs")
        wait_until(lambda: "build_batches" in (t := browser.text()) and "collect_batch" in t, timeout_s=60,
                   every_s=1, what="the demo's runs")
        browser.screenshot(ROOT / "docs" / "dagster-runs.png")

        # With the daemon running under `forge dev`, `forge health` sees its heartbeat.
        health_env = {**env, "FORGE_SIMULATOR_URL": f"http://127.0.0.1:{sim_port}"}

        def daemon_ok() -> bool:
            proc = _forge(["health", "--json", "--skip", "providers", "--skip", "ollama"], health_env, timeout=120)
            checks = {c["name"]: c["status"] for c in json.loads(proc.stdout)["checks"]}
            return checks["dagster_daemon"] == "ok" and checks["postgres"] == "ok"

        wait_until(daemon_ok, timeout_s=120, every_s=2, what="the daemon's heartbeat")
    finally:
        if browser is not None:
            browser.close()
        _stop_group(dev)


def _stop_group(proc: subprocess.Popen) -> None:
    """Ctrl-C to `forge dev` and everything it started, then make sure no code server lingers."""
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)
