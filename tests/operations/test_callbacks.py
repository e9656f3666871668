"""Callbacks under the policy, with real receivers on loopback addresses: refused by default and for good,
delivered once where the operator opened them, sent to the very address that was checked, and bounded per
host and in what is read back. Every receiver here listens on 127.0.0.0/8 or ::1; other addresses are
only named (in URLs and resolver answers) to be refused, never connected to."""

from __future__ import annotations

import ssl
import subprocess
import threading

import pytest

from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.ops.callback_policy import CallbackPolicy
from forge_dagster.core.ops.metrics import render
from forge_dagster.core.ops.relay import Relay
from forge_dagster.core.ops.stamps import StampSender
from forge_dagster.core.store import ForgeStore, JobSpec
from tests.helpers import register_processor, succeed, wait_until
from tests.operations.conftest import SECRET
from tests.operations.receiver import Receiver


def finish(store: ForgeStore, urls: list[str]) -> list[int]:
    """One realtime job per URL, succeeded with {"n": i}: each commit writes its stamp."""
    register_processor(store)
    ids = submit_jobs(store, [JobSpec("p", {"n": i}, mode="realtime", callback_url=url)
                         for i, url in enumerate(urls)]).accepted
    succeed(store, [(job, {"n": job.payload["n"]}) for job in store.jobs.claim(len(urls))])
    return ids


def stamp_rows(store: ForgeStore) -> dict[int, dict]:
    """The stamp rows by job id."""
    with store.transaction() as conn:
        rows = conn.execute("SELECT (payload ->> 'job_id')::bigint, delivered_at, refused_at, attempts, last_error"
                            " FROM outbox WHERE topic = 'job.stamp'").fetchall()
    return {r[0]: {"delivered_at": r[1], "refused_at": r[2], "attempts": r[3], "last_error": r[4]} for r in rows}


def settled(store: ForgeStore, relay: Relay) -> bool:
    relay.drain()
    return store.outbox.lag()[0] == 0


@pytest.fixture
def receivers():
    """receivers(host, port=0, tls=None) -> a started Receiver, stopped after the test."""
    started: list[Receiver] = []

    def start(host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None) -> Receiver:
        started.append(Receiver(host, port, tls=tls).start())
        return started[-1]

    yield start
    for r in started:
        if r.state.gate is not None:
            r.state.gate.set()
        r.stop()


def test_a_callback_to_loopback_is_refused_by_default_for_good_and_the_job_keeps_its_result(
    store, receiver, make_relay,
):
    [job_id] = finish(store, [receiver.url + "/cb/0"])
    relay = make_relay(store, allow=None)  # the default policy

    report = wait_until(lambda: (r := relay.drain()).refused and r, timeout_s=10, what="the refusal")
    assert (report.delivered, report.failed) == (0, 0) and "1 stamps refused" in report.summary()
    row = stamp_rows(store)[job_id]
    assert row["refused_at"] is not None and row["delivered_at"] is None and row["attempts"] == 0
    assert "127.0.0.1 is loopback" in row["last_error"]
    for _ in range(3):  # permanent: never tried again, not counted as waiting
        assert relay.drain().refused == 0
    assert receiver.state.seen == []
    assert store.outbox.lag()[0] == 0 and store.outbox.undelivered() == []
    job = store.jobs.get(job_id)
    assert job["state"] == "succeeded" and job["output"] == {"n": 0}  # the job keeps its result
    assert "forge_callbacks_refused_total 1.0" in render(store).decode()
    assert [r["reason"] for r in store.outbox.recent_refused()] == [row["last_error"]]

    # Opened by the operator, the address gets a new job's stamp, once; the refused one stays refused.
    [second] = finish(store, [receiver.url + "/cb/1"])
    opened = make_relay(store, allow="127.0.0.1")
    wait_until(lambda: settled(store, opened), timeout_s=10, what="the second stamp")
    assert [s.path for s in receiver.state.seen] == ["/cb/1"] and receiver.state.duplicates == []
    assert stamp_rows(store)[second]["delivered_at"] is not None
    assert stamp_rows(store)[job_id]["delivered_at"] is None


def test_a_hostname_that_resolves_to_a_private_address_is_refused(store, receiver, make_relay):
    answers = {"crm.test": ["10.20.30.40"], "mixed.test": ["127.0.0.1", "192.168.7.7"], "ok.test": ["127.0.0.1"]}
    port = receiver.port
    crm, mixed, ok = finish(store, [f"http://{host}:{port}/cb/{i}" for i, host in enumerate(answers)])
    relay = make_relay(store, allow="127.0.0.1", resolver=lambda host, _: answers[host])

    wait_until(lambda: settled(store, relay), timeout_s=10, what="every stamp settled")
    rows = stamp_rows(store)
    assert "crm.test resolves to 10.20.30.40 is private" in rows[crm]["last_error"]
    assert "mixed.test resolves to 192.168.7.7 is private" in rows[mixed]["last_error"]  # every address counts
    assert rows[ok]["delivered_at"] is not None
    [seen] = receiver.state.seen
    assert seen.path == "/cb/2" and seen.headers["host"] == f"ok.test:{port}"


def test_a_dns_answer_that_changes_after_the_check_cannot_redirect_the_post(store, receivers, make_relay):
    checked = receivers("127.0.0.2")
    other = receivers("127.0.0.3", port=checked.port)  # same port: only the address tells them apart
    lookups: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        """Answers an allowed address first, and another one at every later lookup."""
        lookups.append(host)
        return ["127.0.0.2"] if len(lookups) == 1 else ["127.0.0.3"]

    url = f"http://rebind.test:{checked.port}/cb"
    finish(store, [url + "/0"])
    relay = make_relay(store, allow="127.0.0.2", resolver=rebinding)
    wait_until(lambda: settled(store, relay), timeout_s=10, what="the stamp")
    assert lookups == ["rebind.test"]  # one lookup, and the POST went to the address it gave
    [seen] = checked.state.seen
    assert seen.path == "/cb/0" and seen.headers["host"] == f"rebind.test:{checked.port}"
    assert other.state.seen == []

    # The next stamp's lookup answers the other address, which is not open: refused, still nothing there.
    [later] = finish(store, [url + "/1"])
    wait_until(lambda: settled(store, relay), timeout_s=10, what="the refusal")
    assert "rebind.test resolves to 127.0.0.3 is loopback" in stamp_rows(store)[later]["last_error"]
    assert other.state.seen == [] and len(checked.state.seen) == 1


def test_ipv6_and_ipv4_mapped_forms_are_refused(store, receiver, receivers, make_relay):
    v6 = receivers("::1")
    answers = {"v6.test": ["::1"], "mapped.test": ["::ffff:127.0.0.1"]}
    urls = {
        v6.url + "/cb/0": "::1 is loopback",
        f"http://[::ffff:127.0.0.1]:{receiver.port}/cb/1": "loopback (IPv4-mapped form of 127.0.0.1)",
        f"http://[::ffff:7f00:2]:{receiver.port}/cb/2": "loopback (IPv4-mapped form of 127.0.0.2)",
        f"http://v6.test:{v6.port}/cb/3": "v6.test resolves to ::1 is loopback",
        f"http://mapped.test:{receiver.port}/cb/4": "mapped.test resolves to ::ffff:7f00:1 is loopback",
        f"http://[::]:{v6.port}/cb/5": ":: is unspecified",
        "http://[fe80::1]/cb/6": "fe80::1 is link-local",
        "http://[fd00::1]/cb/7": "fd00::1 is unique-local",
        "http://[::ffff:169.254.169.254]/latest/meta-data/": "link-local (IPv4-mapped form of 169.254.169.254)",
        "http://[::ffff:10.0.0.1]/cb/9": "private (IPv4-mapped form of 10.0.0.1)",
    }
    ids = finish(store, list(urls))
    relay = make_relay(store, allow=None, resolver=lambda host, _: answers[host])
    wait_until(lambda: settled(store, relay), timeout_s=10, what="every refusal")
    rows = stamp_rows(store)
    for job_id, reason in zip(ids, urls.values(), strict=True):
        assert rows[job_id]["refused_at"] is not None and reason in rows[job_id]["last_error"], rows[job_id]
    assert v6.state.seen == [] and receiver.state.seen == []

    # The IPv6 path itself works: opened, ::1 gets its stamp.
    finish(store, [v6.url + "/cb/open"])
    wait_until(lambda: settled(store, make_relay(store, allow="::1")), timeout_s=10, what="the IPv6 stamp")
    assert [s.path for s in v6.state.seen] == ["/cb/open"]


def test_https_only_refuses_plain_http(store, receiver, make_relay):
    [job_id] = finish(store, [receiver.url + "/cb/0"])
    relay = make_relay(store, allow="127.0.0.1", environ={"FORGE_CALLBACK_HTTPS_ONLY": "1"})
    wait_until(lambda: settled(store, relay), timeout_s=10, what="the refusal")
    assert "must be https" in stamp_rows(store)[job_id]["last_error"]
    assert receiver.state.seen == []


def test_a_10_mb_answer_is_cut_off_and_does_not_stall_the_relay(store, receiver, receivers, make_relay):
    big = receivers()
    big.answer_with_body(10 * 1024 * 1024)
    big.refuse(1)  # the first answer is a 503 with the 10 MB body: its error is kept short
    to_big, to_other = finish(store, [big.url + "/cb/0", receiver.url + "/cb/1"])
    relay = make_relay(store)

    failed = wait_until(lambda: (r := relay.drain()).failed and r, timeout_s=20, what="the 503")
    assert len(receiver.accepted("/cb")) == 1  # the other host's stamp went in the same round
    [error] = failed.errors
    assert error.startswith(f"127.0.0.1:{big.port}: HTTP 503 xxxx") and len(error) < 300
    wait_until(lambda: settled(store, relay), timeout_s=20, what="the retried stamp")
    assert stamp_rows(store)[to_big]["delivered_at"] is not None  # the 2xx counts, the body is not read
    assert stamp_rows(store)[to_other]["delivered_at"] is not None
    wait_until(lambda: big.state.body_cut == 2, timeout_s=20, what="both answers to be cut off")
    assert big.state.body_written < 2 * 1024 * 1024  # of 20 MB: read to the bound, then the connection closed


def test_one_slow_receiver_holds_only_its_own_share_of_the_relay(store, receiver, receivers):
    slow = receivers()
    gate = slow.hold()
    finish(store, [f"{slow.url}/cb/{i}" for i in range(6)] + [f"{receiver.url}/cb/{i}" for i in range(6)])
    # A patient sender (60 s timeouts): only the per-host bound can let the other host's stamps past.
    sender = StampSender(SECRET.encode(), policy=CallbackPolicy.parse("127.0.0.1"), timeout_s=60)
    relay = Relay(store, stamps=sender, notifier=None, host_concurrency=2, base_delay_s=0.05)
    drain = threading.Thread(target=lambda: wait_until(lambda: relay.drain().delivered, timeout_s=60,
                                                       what="a delivering drain"))
    drain.start()
    try:
        # While the slow receiver holds every request, the other host's stamps all arrive.
        wait_until(lambda: len(receiver.accepted("/cb")) == 6, timeout_s=20, what="the fast receiver's stamps")
        assert slow.state.in_flight == 2 and slow.state.max_in_flight == 2  # its share: 2 at once
    finally:
        gate.set()
        drain.join(60)
    try:
        wait_until(lambda: settled(store, relay), timeout_s=20, what="the slow receiver's stamps")
    finally:
        relay.close()
    assert len(slow.accepted("/cb")) == 6 and slow.state.max_in_flight == 2 and slow.state.duplicates == []


def test_a_host_gets_stamps_at_its_rate_and_the_rest_wait_without_an_attempt(store, receiver, receivers, make_relay):
    other = receivers("127.0.0.2")
    finish(store, [f"{receiver.url}/cb/{i}" for i in range(4)] + [f"{other.url}/cb/{i}" for i in range(4)])
    relay = make_relay(store, allow="127.0.0.1 127.0.0.2", host_rate=0.001)  # a burst of 1, then ~none

    report = wait_until(lambda: (r := relay.drain()).delivered and r, timeout_s=10, what="a delivering drain")
    assert (report.delivered, report.failed) == (2, 0)  # one per host
    assert relay.drain().delivered == 0
    waiting = [r for r in stamp_rows(store).values() if r["delivered_at"] is None]
    assert len(waiting) == 6 and all(r["attempts"] == 0 and r["last_error"] is None for r in waiting)
    assert len(receiver.state.seen) == 1 and len(other.state.seen) == 1


def test_https_goes_to_the_checked_address_and_verifies_the_certificate_for_the_name(
    store, receivers, tmp_path,
):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=hooks.test", "-addext", "subjectAltName=DNS:hooks.test", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    names: list[str | None] = []
    server_tls.sni_callback = lambda sock, name, ctx: names.append(name)
    tls = receivers("127.0.0.2", tls=server_tls)
    answers = {"hooks.test": ["127.0.0.2"], "other.test": ["127.0.0.2"]}
    good, wrong_name = finish(store, [f"https://{h}:{tls.port}/cb/{i}" for i, h in enumerate(answers)])
    sender = StampSender(SECRET.encode(), policy=CallbackPolicy.parse("127.0.0.2"),
                         resolver=lambda host, _: answers[host], verify=ssl.create_default_context(cafile=cert))
    relay = Relay(store, stamps=sender, notifier=None, base_delay_s=60)
    try:
        wait_until(lambda: relay.drain().failed, timeout_s=10, what="the round")
    finally:
        relay.close()
    rows = stamp_rows(store)
    assert rows[good]["delivered_at"] is not None
    assert "hooks.test" in names  # SNI carried the name, though the connection went to the address
    [seen] = tls.state.seen
    assert seen.path == "/cb/0" and seen.headers["host"] == f"hooks.test:{tls.port}"
    # The certificate is checked against the name in the URL, not the address: other.test is not in it.
    assert rows[wrong_name]["delivered_at"] is None and "certificate" in rows[wrong_name]["last_error"].lower()


def test_the_slack_webhook_is_the_operators_and_not_under_the_callback_policy(store, receiver, make_relay):
    """A job names its callback; only the operator names the webhook. Both on 127.0.0.1 here: the stamp is
    refused by the default policy, the notification goes, and the webhook's token is never shown."""
    from forge_dagster.core.store import OutboxMessage

    store.outbox.write([OutboxMessage("batch.ended", "batch:1", {"batch_id": 1})])
    [job_id] = finish(store, [receiver.url + "/cb/0"])
    relay = make_relay(store, webhook=receiver.url + "/slack/T0/B0/tok-0123456789", allow=None)
    wait_until(lambda: settled(store, relay), timeout_s=10, what="both rows settled")
    assert len(receiver.slack_messages()) == 1 and receiver.accepted("/cb") == {}
    assert stamp_rows(store)[job_id]["refused_at"] is not None
    assert f"127.0.0.1:{receiver.port}" in relay.describe() and "tok-0123456789" not in relay.describe()
    assert "public addresses only" in relay.describe()
