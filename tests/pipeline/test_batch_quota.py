"""Quota recovery on the batch path: a key whose quota is exhausted at batch submit is paused (the jobs wait,
attempts unspent, the operator told), the provider's other key keeps working, the probe sensor brings the key
back and a relapse waits longer; a batch refused for the model's enqueued-token limit holds submission for the
model until our in-flight batches drain, and its jobs complete without spending attempts."""

from __future__ import annotations

import json

import anthropic
import dagster as dg
import openai

from forge_dagster.core.batch.building import build_and_submit
from forge_dagster.core.batch.collection import collect_results, poll_open_batches, validate_batch
from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.providers.quota import KeyPorts, PausePolicy
from forge_dagster.core.providers.requests import render_request
from forge_dagster.core.realtime import KeyRing, keys_from_env
from forge_dagster.core.store import ForgeStore, JobSpec
from forge_dagster.resources.lease_store import LeaseStoreResource
from forge_dagster.resources.provider_keys import ProviderKeysResource
from forge_dagster.sensors.quota_sensors import key_probe_sensor
from forge_dagster.simulator.dice import key_id
from tests.helpers import wait_until
from tests.pipeline.conftest import review, ticket

FAST = PausePolicy(base_s=0.2, cap_s=2.0, probe_budget_s=5.0, hold_recheck_s=0.0)
PRIMARY = "sk-proj-forgetest-BATCHPRIMARY-0123456789ab"
BACKUP = "sk-proj-forgetest-BATCHBACKUP-0123456789ab"
KEY_ENV = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "FORGE_PROVIDER_KEYS")


def enqueue(store: ForgeStore, n: int, *, first: int = 0, max_attempts: int = 3, line=ticket) -> list[int]:
    specs = [JobSpec(job["processor"], job["input"], external_id=job["id"], processor_version="1.0.0",
                     max_attempts=max_attempts) for job in (line(i) for i in range(first, first + n))]
    ids = submit_jobs(store, specs).accepted
    assert len(ids) == n
    return ids


def collect_ended(store: ForgeStore, catalog, ports) -> list[int]:
    """Poll every in-flight batch; collect and validate the ones that ended."""
    ended = poll_open_batches(store, ports, quota=FAST).ended
    for batch_id in ended:
        collect_results(store, ports, batch_id)
        validate_batch(store, catalog, batch_id)
    return ended


def topics(store: ForgeStore) -> list[str]:
    with store.transaction() as conn:
        return [row[0] for row in conn.execute("SELECT topic FROM outbox ORDER BY id")]


def key_paused_payloads(store: ForgeStore) -> list[dict]:
    with store.transaction() as conn:
        return [row[0] for row in conn.execute("SELECT payload FROM outbox WHERE topic = 'key.paused' ORDER BY id")]


def batch_creates(sim, api_key: str | None = None) -> list[dict]:
    return [r for r in sim.requests() if r["method"] == "POST" and r["path"] == "/v1/batches"
            and (api_key is None or r["key_id"] == key_id(api_key))]


def spend_quota(sim, api_key: str) -> None:
    """One realtime call of about 5,000 tokens on `api_key`: the key's quota is used up after it."""
    with openai.OpenAI(api_key=api_key, base_url=sim.openai_base_url, max_retries=0) as client:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x" * 20000}])


def attempts(store: ForgeStore, ids: list[int]) -> set[int]:
    return {store.jobs.get(i)["attempt"] for i in ids}


def probe_tick(database_url: str, schema: str, sim) -> dict:
    """One tick of the key probe sensor, as Dagster runs it (keys: the simulator's, from the resource)."""
    resources = {"lease_store": LeaseStoreResource(database_url=database_url, db_schema=schema),
                 "provider_keys": ProviderKeysResource(simulator_url=sim.url)}
    with dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), resources=resources) as context:
        return json.loads(key_probe_sensor(context).cursor)


def test_quota_exhaustion_at_submit_pauses_the_key_and_jobs_wait_until_the_probe_resumes_it_after_refill(
    store, catalog, ports, sim, database_url, schema, monkeypatch,
):
    for name in KEY_ENV:  # the probe sensor's keys: the simulator's only
        monkeypatch.delenv(name, raising=False)
    sim.configure(quota_tokens=1)
    spend_quota(sim, "sim-no-key")
    ids = enqueue(store, 3)

    report = build_and_submit(store, catalog, ports, quota=FAST)
    assert report.batches == [] and report.requeued_jobs == 3 and report.failed_jobs == 0
    key = store.keys.get("openai", "simulator")
    assert key["state"] == "paused" and key["reason"].startswith("quota_exhausted")
    assert store.jobs.counts() == {"pending": 3} and attempts(store, ids) == {0}, "a paused key spends no attempt"
    assert topics(store) == ["key.paused", "provider.all_keys_paused"]

    # While the key is paused the builder does not call the provider: the jobs wait, unspent.
    creates = len(batch_creates(sim))
    build_and_submit(store, catalog, ports, quota=FAST)
    assert len(batch_creates(sim)) == creates
    assert store.jobs.counts() == {"pending": 3} and attempts(store, ids) == {0}

    # Before the refill the probe (listing models) answers, as the real APIs do for an exhausted key: the
    # key goes back on trial, its first batch create meets the wall again and it is paused for longer.
    wait_until(lambda: probe_tick(database_url, schema, sim)["resumed"], timeout_s=10, what="a probe to resume")
    build_and_submit(store, catalog, ports, quota=FAST)
    relapsed = store.keys.get("openai", "simulator")
    assert relapsed["state"] == "paused" and relapsed["probe_count"] == 1
    assert [p["probe_count"] for p in key_paused_payloads(store)] == [0, 1], "each relapse waits longer"
    assert store.jobs.counts() == {"pending": 3} and attempts(store, ids) == {0}

    sim.refill_quota()
    wait_until(lambda: probe_tick(database_url, schema, sim)["resumed"], timeout_s=10, what="a probe to resume")
    report = build_and_submit(store, catalog, ports, quota=FAST)
    assert len(report.batches) == 1 and report.submitted_jobs == 3
    key = store.keys.get("openai", "simulator")
    assert (key["state"], key["probe_count"], key["paused_at"]) == ("active", 0, None), "the episode ended"
    wait_until(lambda: collect_ended(store, catalog, ports), timeout_s=10, what="the batch to end")

    assert store.jobs.counts() == {"succeeded": 3}, "no job lost or failed by the outage"
    assert attempts(store, ids) == {1}
    assert topics(store).count("provider.all_keys_paused") == 1, "the operator is told once per outage"
    assert topics(store).count("provider.keys_available") == 1


def test_a_paused_key_is_skipped_and_the_providers_other_key_keeps_submitting(store, catalog, sim):
    env = {"OPENAI_API_KEY": PRIMARY, "OPENAI_API_KEY_BACKUP": BACKUP, "OPENAI_BASE_URL": sim.openai_base_url}
    keys = KeyPorts(KeyRing(keys_from_env(env, timeout_s=10)))
    sim.configure(quota_tokens=4000)
    spend_quota(sim, PRIMARY)
    ids = enqueue(store, 4)

    report = build_and_submit(store, catalog, keys, quota=FAST)
    assert len(report.batches) == 1 and report.submitted_jobs == 4
    assert {(k["alias"], k["state"]) for k in store.keys.all()} == {("primary", "paused"), ("backup", "active")}
    assert topics(store) == ["key.paused"], "one key paused, the provider still served: nothing else to tell"
    assert [r["status"] for r in batch_creates(sim, PRIMARY)] == [429]
    assert [r["status"] for r in batch_creates(sim, BACKUP)] == [200]

    more = enqueue(store, 2, first=4)
    build_and_submit(store, catalog, keys, quota=FAST)
    assert len(batch_creates(sim, PRIMARY)) == 1, "the paused key is skipped, not tried again"
    assert len(batch_creates(sim, BACKUP)) == 2

    def all_succeeded() -> bool:
        collect_ended(store, catalog, keys)
        return store.jobs.counts() == {"succeeded": 6}

    wait_until(all_succeeded, timeout_s=10, what="every job to succeed")
    polls = [r for r in sim.requests() if r["method"] == "GET" and r["path"].startswith("/v1/batches/")]
    assert polls and {r["key_id"] for r in polls} == {key_id(BACKUP)}, "a batch is read through its own key"
    assert attempts(store, ids + more) == {1}
    keys.close()


def test_anthropic_credit_exhaustion_at_batch_submit_pauses_the_key_and_spends_no_attempt(store, catalog, ports, sim):
    sim.configure(quota_tokens=1)
    with anthropic.Anthropic(api_key="sim-no-key", base_url=sim.url, max_retries=0) as client:  # spend it all
        client.messages.create(model="claude-haiku-4-5", max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    ids = enqueue(store, 3, line=review)

    report = build_and_submit(store, catalog, ports, quota=FAST)
    assert report.batches == [] and report.requeued_jobs == 3
    key = store.keys.get("anthropic", "simulator")
    assert key["state"] == "paused" and "credit balance is too low" in key["reason"]
    assert store.keys.get("openai", "simulator")["state"] == "active", "only the refused provider's key stops"
    assert store.jobs.counts() == {"pending": 3} and attempts(store, ids) == {0}
    assert topics(store) == ["key.paused", "provider.all_keys_paused"]


def _line_tokens(catalog) -> int:
    """The input tokens the simulator counts for one ticket request (its body as JSON, four chars a token)."""
    body = render_request(catalog["ticket_triage"], ticket(0)["input"], "c").body
    return len(json.dumps(body)) // 4


def test_token_limit_holds_the_model_until_in_flight_batches_drain_and_jobs_complete_unspent(
    store, catalog, ports, sim, database_url, schema,
):
    sim.configure(enqueued_token_limit=3 * _line_tokens(catalog), batch_processing_s=30)  # one 2-line batch
    ids = enqueue(store, 6)

    first = build_and_submit(store, catalog, ports, quota=FAST, max_requests_per_batch=2)
    assert len(first.batches) == 3
    collect_ended(store, catalog, ports)
    refused = store.batches.get(first.batches[1])
    with openai.OpenAI(api_key="sim-no-key", base_url=sim.openai_base_url, max_retries=0) as client:
        remote = client.batches.retrieve(refused["provider_batch_id"])
    assert remote.status == "failed" and remote.errors.data[0].code == "token_limit_exceeded"
    assert [(h["provider"], h["model"]) for h in store.keys.holds()] == [("openai", "gpt-4o-mini")]
    assert store.jobs.counts() == {"submitted": 2, "pending": 4}
    assert attempts(store, [i for i in ids if store.jobs.get(i)["state"] == "pending"]) == {0}
    assert topics(store) == ["batch.submission_held"], "two refusals, one hold, told once"

    creates = len(batch_creates(sim))
    build_and_submit(store, catalog, ports, quota=FAST, max_requests_per_batch=2)
    assert len(batch_creates(sim)) == creates, "a held model is not submitted"
    assert store.jobs.counts() == {"submitted": 2, "pending": 4}
    assert probe_tick(database_url, schema, sim)["holds_released"] == 0, "its first batch is still in flight"

    sim.configure(batch_processing_s=0)  # the first batch ends at its next read: its tokens drain
    assert collect_ended(store, catalog, ports) == [first.batches[0]]
    assert probe_tick(database_url, schema, sim)["holds_released"] == 1

    def all_succeeded() -> bool:  # the builder, the status sensor and the probe sensor, one round each
        build_and_submit(store, catalog, ports, quota=FAST, max_requests_per_batch=2)
        collect_ended(store, catalog, ports)
        probe_tick(database_url, schema, sim)
        return store.jobs.counts() == {"succeeded": 6}

    wait_until(all_succeeded, timeout_s=20, what="every job to succeed")
    assert attempts(store, ids) == {1}, "the refusals spent no attempt"
    assert store.keys.holds() == []


def test_a_batch_alone_over_the_token_limit_spends_its_attempts_instead_of_looping(store, catalog, ports, sim):
    sim.configure(enqueued_token_limit=_line_tokens(catalog))  # not even one 2-line batch fits
    ids = enqueue(store, 2, max_attempts=1)
    build_and_submit(store, catalog, ports, quota=FAST)
    collect_ended(store, catalog, ports)
    assert store.jobs.counts() == {"dead": 2}
    assert "token_limit_exceeded" in store.jobs.get(ids[0])["reason"]
    assert store.keys.holds() == [], "nothing of ours in flight: no hold to wait on"
