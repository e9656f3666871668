"""The console's pages over a real store: a model's `<script>` renders as text, the jobs list filters and
pages, a batch page tells its story after a real batch round, processors diff, the cost chart is a PNG."""

from __future__ import annotations

import re

import pytest

from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.platform.registry import load_catalog
from forge_dagster.core.realtime.handler_worker import Worker
from forge_dagster.core.store import JobSpec
from forge_dagster.resources.provider_keys import ProviderKeysResource
from tests.helpers import ECHO_HANDLER, register_processor, register_step, run_batch_round
from tests.store.handlers import echo

SCRIPT = "<script>alert('pwned')</script>"
# The step's schema caps the echoed text, so the script comes back in the validator's errors too.
STRICT_SCHEMA = {"type": "object", "properties": {"echo": {"type": "object", "properties": {
    "html": {"type": "string", "maxLength": 5}}}}}


def run_steps(store) -> None:
    """The echo handler over both steps' jobs (a real `forge work --handler` loop, in this process)."""
    catalog = load_catalog(store, sync=False)
    steps = [catalog[("echo_step", "1.0.0")], catalog[("strict_step", "1.0.0")]]
    Worker(store, echo, steps, concurrency=2, idle_sleep_s=0.01).run(until_idle=True)


@pytest.fixture
def scripted(store):
    """One job that succeeded and one that ended invalid, each carrying a model's `<script>`."""
    register_step(store, "echo_step")
    register_step(store, "strict_step", ECHO_HANDLER, response_schema=STRICT_SCHEMA)
    [ok] = submit_jobs(store, [JobSpec("echo_step", {"html": SCRIPT}, external_id="ok-1")]).accepted
    [bad] = submit_jobs(store, [JobSpec("strict_step", {"html": SCRIPT}, external_id="bad-1")]).accepted
    run_steps(store)
    assert store.jobs.get(ok)["state"] == "succeeded" and store.jobs.get(bad)["state"] == "invalid"
    return ok, bad


def test_a_models_script_renders_as_text_and_no_page_may_run_script(console, scripted):
    ok, bad = scripted
    for path in ("/jobs", f"/jobs/{ok}", f"/jobs/{bad}", "/jobs?state=invalid", "/jobs?q=bad"):
        page = console.get(path)
        assert page.status_code == 200, path
        assert "<script" not in page.text.lower(), path
        assert "default-src 'none'" in page.headers["content-security-policy"]
    shown = console.get(f"/jobs/{bad}").text
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in shown  # in the validator's errors
    assert "&lt;script&gt;" in console.get(f"/jobs/{ok}").text  # in the accepted output


def test_jobs_filter_by_state_processor_and_intake_id_with_counts_and_pages(console, store):
    register_step(store, "echo_step")
    register_step(store, "strict_step", ECHO_HANDLER, response_schema=STRICT_SCHEMA)
    specs = [JobSpec("echo_step", {"html": "fine"}, external_id=f"row-{i}") for i in range(60)]
    specs += [JobSpec("strict_step", {"html": "too long for it"}, external_id=f"odd_{i}") for i in range(3)]
    submit_jobs(store, specs)
    run_steps(store)

    page = console.get("/jobs?state=invalid").text
    assert "invalid: 3" in page and "succeeded: 60" in page
    assert page.count('<span class="state state-invalid">invalid</span>') == 3
    assert "row-" not in page
    assert console.get("/jobs?processor=strict_step").text.count("odd_") == 3
    # An intake-id prefix: `_` is a literal here, not LIKE's wildcard.
    assert "odd_1" in console.get("/jobs?q=odd_").text and "odd_" not in console.get("/jobs?q=odd%25").text
    first = console.get("/jobs?processor=echo_step").text
    assert first.count("row-") == 50 and "older" in first
    older = re.search(r'href="(\?[^"]*before=\d+)">older', first).group(1).replace("&amp;", "&")
    assert console.get("/jobs" + older).text.count("row-") == 10


def test_a_batch_page_after_a_real_round_shows_its_history_outcomes_and_cost(console, store, sim):
    catalog = load_catalog(store)
    ports = ProviderKeysResource(simulator_url=sim.url).ports
    submit_jobs(store, [JobSpec("ticket_triage", {"subject": f"T{i}", "body": "It broke."}, external_id=f"t{i}")
                        for i in range(4)])
    [batch_id] = run_batch_round(store, catalog, ports)
    page = console.get(f"/batches/{batch_id}").text
    for shown in ("in_progress", "ended_completed", "collected", "succeeded: 4", "Provider's status history"):
        assert shown in page, shown
    listing = console.get("/batches?state=collected").text
    assert f'href="/batches/{batch_id}"' in listing
    job_page = console.get(f"/jobs/{store.console.batch_jobs(batch_id)[0]['id']}").text
    assert "Rendered request" in job_page and "ticket_triage" in job_page and "$0." in job_page


def test_processors_list_diff_and_preview(console, store):
    register_processor(store, name="triage", version="1.0.0", template="Sort this ticket: {body}")
    register_processor(store, name="triage", version="1.1.0", template="Sort this ticket by urgency: {body}",
                       temperature=0.2)
    listing = console.get("/processors").text
    assert "triage" in listing and "1.1.0" in listing and "draft" in listing
    diff = console.get("/processors/triage/diff?old=1.0.0&new=1.1.0").text
    assert "-template: &#39;Sort this ticket: {body}&#39;" in diff or "-template: Sort this ticket: {body}" in diff
    assert "+temperature: 0.2" in diff
    preview = console.get('/processors/triage/1.1.0/preview?input={"body":"printer on fire"}').text
    assert "Sort this ticket by urgency: printer on fire" in preview


def test_the_cost_chart_is_the_reports_png_and_unpriced_models_are_flagged(console, store):
    chart = console.get("/costs/chart.png")
    assert chart.status_code == 200 and chart.headers["content-type"] == "image/png"
    assert chart.content.startswith(b"\x89PNG")
    assert "no budget set" in console.get("/costs").text


def test_archived_jobs_and_batches_open_on_the_same_pages(console, store, sim):
    catalog = load_catalog(store)
    ports = ProviderKeysResource(simulator_url=sim.url).ports
    submit_jobs(store, [JobSpec("ticket_triage", {"subject": "T", "body": "It broke."}, external_id="arch-1")])
    [batch_id] = run_batch_round(store, catalog, ports)
    [job] = store.console.batch_jobs(batch_id)
    assert store.operations.archive(0).batches == 1
    listing = console.get("/archive").text
    assert f'href="/batches/{batch_id}"' in listing and "arch-1" in listing
    batch_page = console.get(f"/batches/{batch_id}").text
    assert "archived" in batch_page and "succeeded: 1" in batch_page
    job_page = console.get(f"/jobs/{job['id']}").text
    assert "archived" in job_page and "attempt 1: succeeded 200" in job_page and "Timeline" in job_page
