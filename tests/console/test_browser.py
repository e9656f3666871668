"""A real browser on the operator's console: `forge console` (uvicorn) over a test store, walked in Debian's
headless Chromium over the DevTools protocol: sign in, jobs list -> invalid -> a job page with the
validator's error -> retry -> the job runs again; a batch page after a batch round through the simulator;
a processor diff; the cost chart; a `forge work` process appearing on the fleet page and leaving it.

Marked `browser`; needs `chromium` (`apt-get install -y chromium`). Screenshots go to docs/.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess

import httpx
import pytest

from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.platform.registry import load_catalog
from forge_dagster.core.store import JobSpec
from forge_dagster.resources.provider_keys import ProviderKeysResource
from tests.console.test_pages import run_steps
from tests.helpers import (
    ECHO_HANDLER,
    ROOT,
    forge_env,
    forge_process,
    register_processor,
    register_step,
    run_batch_round,
    wait_until,
)
from tests.operations.cdp import Browser, chromium_path

pytestmark = pytest.mark.browser

TOKEN = "browser-console-token-51c2"
DOCS = ROOT / "docs"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _js(browser: Browser, expression: str):
    return browser.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")


def _open(browser: Browser, url: str, expect: str) -> str:
    browser.goto(url)
    return wait_until(lambda: expect in (t := browser.text()) and t, timeout_s=30, every_s=0.1, what=f"{expect!r} at {url}")


def _click_link(browser: Browser, text: str) -> None:
    assert _js(browser, f"(() => {{ const a = [...document.querySelectorAll('a')].find(x => x.innerText.trim()"
                        f".startsWith({json.dumps(text)})); if (a) {{ a.click(); return true }} return false }})()"), text


def _submit(browser: Browser, form_action: str, fields: dict[str, str]) -> None:
    """Fill and submit the form posting to `form_action` as a person would (typing, then the button)."""
    script = (f"(() => {{ const f = [...document.forms].find(x => x.getAttribute('action') === {json.dumps(form_action)});"
              f" if (!f) return false; const v = {json.dumps(fields)};"
              f" for (const k in v) f.elements[k].value = v[k]; f.querySelector('button').click(); return true }})()")
    assert _js(browser, script), form_action


def test_the_console_walked_in_a_browser(store, database_url, schema, sim):
    binary = chromium_path()
    assert binary, "chromium is not installed: apt-get install -y chromium"
    catalog = load_catalog(store)  # the packaged processors, registered
    register_step(store, "echo_step")
    register_step(store, "strict_step", ECHO_HANDLER, response_schema={"type": "object", "required": ["label"]})
    submit_jobs(store, [JobSpec("echo_step", {"text": f"fine {i}"}, external_id=f"ok-{i}") for i in range(8)])
    [invalid] = submit_jobs(store, [JobSpec("strict_step", {"text": "<script>alert(1)</script>"},
                                            external_id="needs-label")]).accepted
    run_steps(store)
    submit_jobs(store, [JobSpec("ticket_triage", {"subject": f"T{i}", "body": "It broke."}, external_id=f"t{i}")
                        for i in range(6)])
    [batch_id] = run_batch_round(store, catalog, ProviderKeysResource(simulator_url=sim.url).ports)
    register_processor(store, name="triage_llm", version="1.0.0", template="Sort: {body}")
    register_processor(store, name="triage_llm", version="1.1.0", template="Sort by urgency: {body}", temperature=0.2)

    port = _free_port()
    env = forge_env(database_url, schema, FORGE_CONSOLE_TOKEN=TOKEN)
    server = forge_process(["console", "--port", str(port)], env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    browser = worker = None
    ui = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(ui + "/healthz"), timeout_s=120, every_s=0.2, what="forge console")
        browser = Browser(binary)
        _open(browser, ui + "/jobs", "Sign in")
        _submit(browser, "/login", {"token": TOKEN})
        wait_until(lambda: "signed in" in browser.text(), timeout_s=30, what="the signed-in jobs list")
        _open(browser, ui + "/jobs", "invalid: 1")
        browser.screenshot(DOCS / "console-jobs.png")

        _click_link(browser, "invalid")  # the count per state is the filter
        wait_until(lambda: "needs-label" in (t := browser.text()) and "ok-1" not in t, timeout_s=30,
                   what="the list filtered to invalid")
        _click_link(browser, str(invalid))
        page = wait_until(lambda: "Validator's errors" in (t := browser.text()) and t, timeout_s=30,
                          what="the job page")
        assert "'label' is a required property" in page and "<script>alert(1)</script>" in page  # shown as text
        assert _js(browser, "document.scripts.length") == 0
        browser.screenshot(DOCS / "console-job.png")

        _submit(browser, f"/jobs/{invalid}/retry", {"reason": "label added to the schema"})
        wait_until(lambda: "retry:" in browser.text(), timeout_s=30, what="the retry's notice")
        assert store.jobs.get(invalid)["state"] == "pending"
        run_steps(store)  # the job runs again
        page = _open(browser, f"{ui}/jobs/{invalid}", "Timeline")
        assert "operator:console" in page and "2 of" in page

        _open(browser, f"{ui}/batches/{batch_id}", "Provider's status history")
        assert "ended_completed" in browser.text() and "succeeded: 6" in browser.text()
        browser.screenshot(DOCS / "console-batch.png")

        _open(browser, f"{ui}/processors/triage_llm/diff?old=1.0.0&new=1.1.0", "+temperature: 0.2")
        browser.screenshot(DOCS / "console-processor-diff.png")

        _open(browser, ui + "/costs", "Budgets today")
        wait_until(lambda: _js(browser, "document.images[0].complete && document.images[0].naturalWidth") or 0,
                   timeout_s=30, what="the cost chart")
        browser.screenshot(DOCS / "console-costs.png")

        _open(browser, ui + "/keys", "Provider keys")
        worker = forge_process(["work", "--handler", ECHO_HANDLER], env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        pid = worker.pid

        def on_fleet(alive: bool) -> bool:
            browser.goto(ui + "/fleet")
            text = wait_until(lambda: "The live fleet" in (t := browser.text()) and t, timeout_s=30)
            return (f"/ {pid}\talive" in text or f"/ {pid}" in text and "1 alive" in text) if alive \
                else "0 alive" in text

        wait_until(lambda: on_fleet(True), timeout_s=120, every_s=0.5, what="forge work on the fleet page")
        browser.screenshot(DOCS / "console-fleet.png")
        worker.send_signal(signal.SIGINT)
        worker.wait(timeout=60)
        wait_until(lambda: on_fleet(False), timeout_s=60, every_s=0.5, what="forge work gone from the fleet")
    finally:
        if browser is not None:
            browser.close()
        for proc in (worker, server):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
