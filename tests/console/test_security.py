"""The console's guard: loopback only without a token, every request needs the token once one is set,
actions need a session, a CSRF token and a reason, and no key, secret or callback signature is shown."""

from __future__ import annotations

import subprocess
import sys

import pytest
from starlette.testclient import TestClient

from forge_dagster.console import ConsoleConfig, create_app
from forge_dagster.console.security import ConsoleRefused, check_bind
from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.providers.keyring import KeyRing
from forge_dagster.core.store import JobSpec
from tests.console.conftest import TOKEN, csrf_of
from tests.console.test_pages import run_steps
from tests.helpers import ECHO_HANDLER, ROOT, register_processor, register_step

SECRET_KEY = "sk-proj-CONSOLEtestKEY0123456789abcdefXYZ"
CALLBACK_SIG = "sig=receiver-signature-0123456789"


@pytest.fixture
def invalid_job(store):
    register_step(store, "echo_step")
    register_step(store, "strict_step", ECHO_HANDLER, response_schema={"type": "object", "required": ["label"]})
    [job_id] = submit_jobs(store, [JobSpec("strict_step", {"html": "x"}, external_id="inv-1")]).accepted
    run_steps(store)
    assert store.jobs.get(job_id)["state"] == "invalid"
    return job_id


def test_any_bind_address_but_loopback_needs_a_token():
    check_bind("127.0.0.1", None)
    check_bind("::1", None)
    with pytest.raises(ConsoleRefused, match="FORGE_CONSOLE_TOKEN"):
        check_bind("0.0.0.0", None)
    check_bind("0.0.0.0", TOKEN)
    cli = subprocess.run([sys.executable, "-m", "forge_dagster.cli", "console", "--host", "0.0.0.0"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert cli.returncode == 2 and "FORGE_CONSOLE_TOKEN" in cli.stderr


def test_with_a_token_every_page_needs_it(store):
    with TestClient(create_app(store, ConsoleConfig(token=TOKEN))) as client:
        assert client.get("/jobs", follow_redirects=False).headers["location"] == "/login"
        assert client.post("/login", data={"token": "wrong"}).status_code == 403
        assert client.get("/jobs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        client.post("/login", data={"token": TOKEN})
        page = client.get("/jobs")
        assert page.status_code == 200 and TOKEN not in page.text and TOKEN not in str(client.cookies)


def test_retry_from_the_console_is_recorded_in_the_jobs_events(operator, store, invalid_job):
    page = operator.get(f"/jobs/{invalid_job}").text
    assert "is a required property" in page and f'action="/jobs/{invalid_job}/retry"' in page
    done = operator.post(f"/jobs/{invalid_job}/retry", data={"csrf": csrf_of(page), "reason": "schema fixed"},
                         follow_redirects=False)
    assert done.status_code == 303
    assert store.jobs.get(invalid_job)["state"] == "pending"
    [event] = [e for e in store.jobs.events(invalid_job) if e["actor"].startswith("operator:")]
    assert event["actor"] == "operator:console" and "schema fixed" in event["reason"]
    run_steps(store)  # the job runs again: a second attempt, invalid again under the same schema
    assert store.jobs.get(invalid_job)["attempt"] == 2


def test_actions_are_refused_without_token_session_csrf_same_origin_or_reason(console, operator, store, invalid_job):
    csrf = csrf_of(operator.get(f"/jobs/{invalid_job}").text)
    url = f"/jobs/{invalid_job}/retry"
    assert console.post(url, data={"csrf": csrf, "reason": "r"}).status_code == 403  # no token configured
    assert operator.post(url, data={"reason": "r"}).status_code == 403  # no CSRF token
    assert operator.post(url, data={"csrf": "0" * 64, "reason": "r"}).status_code == 403
    assert operator.post(url, data={"csrf": csrf, "reason": "r"},
                         headers={"Origin": "https://evil.example"}).status_code == 403
    assert operator.post(url, data={"csrf": csrf, "reason": " "}).status_code == 403
    assert operator.get(url).status_code in (404, 405)  # GET never acts
    assert store.jobs.get(invalid_job)["state"] == "invalid"


def test_promote_from_the_console_keeps_the_reason(operator, store):
    register_processor(store, name="triage", version="1.0.0")
    register_processor(store, name="triage", version="1.1.0")  # registered as a draft beside the active one
    page = operator.get("/processors").text
    done = operator.post("/processors/triage/1.1.0/promote", data={"csrf": csrf_of(page), "reason": "better"},
                         follow_redirects=False)
    assert done.status_code == 303
    [event] = [e for e in store.processors.events("triage") if e["to_status"] == "active" and e["version"] == "1.1.0"]
    assert event["note"].endswith(": better") and event["actor"] == "operator:console"


def test_no_key_secret_or_callback_signature_on_any_page(operator, store):
    ring = KeyRing.from_env({"OPENAI_API_KEY": SECRET_KEY})
    store.keys.register(ring.records())
    register_processor(store)
    [job_id] = submit_jobs(store, [JobSpec("p", {"note": SECRET_KEY},
                                           callback_url=f"https://hooks.example.com/forge?{CALLBACK_SIG}")]).accepted
    pages = [operator.get(p).text for p in ("/keys", "/jobs", f"/jobs/{job_id}", "/fleet", "/costs", "/processors")]
    assert "sk-proj-" in pages[0]  # the masked form is shown
    for page in pages:
        assert SECRET_KEY not in page and CALLBACK_SIG not in page and TOKEN not in page
    assert "https://hooks.example.com/forge?…" in pages[2]
