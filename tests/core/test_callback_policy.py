"""The callback policy: which addresses a job's callback may reach, and what intake refuses without a lookup.

Only checks here, no traffic: the addresses below are classified, never connected to (the relay's tests
with real receivers are in tests/operations/test_callbacks.py).
"""

from __future__ import annotations

import ipaddress

import pytest

from forge_dagster.core.intake.lines import parse_lines
from forge_dagster.core.ops.callback_policy import CallbackPolicy, CallbackRefused

INWARD = {
    "127.0.0.1": "loopback", "127.3.4.5": "loopback", "::1": "loopback",
    "169.254.169.254": "link-local", "fe80::1": "link-local", "fe80::a9fe:a9fe": "link-local",
    "10.1.2.3": "private", "172.16.0.9": "private", "192.168.1.1": "private",
    "fd00::1": "unique-local", "fc00::5": "unique-local",
    "224.0.0.1": "multicast", "ff02::1": "multicast",
    "0.0.0.0": "unspecified", "::": "unspecified",
    "100.64.0.1": "shared (carrier-grade NAT)",
    # IPv4-mapped forms, and IPv4 carried in 6to4 and NAT64 addresses
    "::ffff:127.0.0.1": "loopback (IPv4-mapped form of 127.0.0.1)",
    "::ffff:169.254.169.254": "link-local (IPv4-mapped form of 169.254.169.254)",
    "::ffff:10.0.0.1": "private (IPv4-mapped form of 10.0.0.1)",
    "::ffff:0.0.0.0": "unspecified (IPv4-mapped form of 0.0.0.0)",
    "2002:a9fe:a9fe::1": "link-local (embedded form of 169.254.169.254)",
    "64:ff9b::7f00:1": "loopback (embedded form of 127.0.0.1)",
}


@pytest.mark.parametrize(("address", "kind"), sorted(INWARD.items()))
def test_the_default_policy_refuses_every_inward_address(address, kind):
    problem = CallbackPolicy().address_problem(ipaddress.ip_address(address))
    assert problem is not None and f"is {kind} " in problem and "FORGE_CALLBACK_ALLOW" in problem


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed_by_default(address):
    assert CallbackPolicy().address_problem(ipaddress.ip_address(address)) is None


def test_the_allow_list_opens_exactly_what_it_names():
    policy = CallbackPolicy.parse("127.0.0.2, hooks.internal  *.corp.example\n10.20.0.0/16 fd00:1::/32")
    allowed = lambda a: policy.address_problem(ipaddress.ip_address(a)) is None  # noqa: E731
    assert allowed("127.0.0.2") and allowed("::ffff:127.0.0.2")  # an address and its mapped form
    assert not allowed("127.0.0.1") and not allowed("127.0.0.3")
    assert allowed("10.20.99.1") and not allowed("10.21.0.1")
    assert allowed("fd00:1::5") and not allowed("fd00:2::5")
    assert not allowed("169.254.169.254")
    assert policy.names_host("hooks.internal") and policy.names_host("HOOKS.internal.")
    assert policy.names_host("a.corp.example") and policy.names_host("x.y.corp.example")
    assert not policy.names_host("corp.example") and not policy.names_host("evilcorp.example")
    assert not policy.names_host("hooks.internal.evil.test")
    with pytest.raises(ValueError, match="FORGE_CALLBACK_ALLOW"):
        CallbackPolicy.parse("http://hooks.internal/")


def test_every_address_a_name_resolves_to_must_be_allowed():
    policy = CallbackPolicy.parse("127.0.0.2")
    answers = {"public.test": ["93.184.216.34"], "mixed.test": ["93.184.216.34", "10.9.8.7"],
               "crm.test": ["10.9.8.7"], "pinned.test": ["127.0.0.2"], "v6.test": ["::ffff:192.168.0.1"]}
    resolve = lambda host, port: answers[host]  # noqa: E731
    assert policy.resolve_checked("public.test", 443, resolve) == ["93.184.216.34"]
    assert policy.resolve_checked("pinned.test", 80, resolve) == ["127.0.0.2"]
    for host, bad in (("mixed.test", "10.9.8.7"), ("crm.test", "10.9.8.7"), ("v6.test", "::ffff:c0a8:1")):
        with pytest.raises(CallbackRefused, match=f"{host} resolves to {bad} is private"):
            policy.resolve_checked(host, 80, resolve)
    # A host the operator named is trusted with whatever it resolves to; a literal address is not resolved.
    named = CallbackPolicy.parse("crm.test")
    assert named.resolve_checked("crm.test", 80, resolve) == ["10.9.8.7"]
    with pytest.raises(CallbackRefused, match="169.254.169.254 is link-local"):
        named.resolve_checked("169.254.169.254", 80, resolve)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:5432/", "http://169.254.169.254/latest/meta-data/", "http://[::1]:3000/",
    "http://[::ffff:127.0.0.1]/", "http://[::ffff:a9fe:a9fe]/", "http://[fe80::1%25eth0]/", "http://10.0.0.8/hook",
    "http://2130706433/", "http://127.1/", "http://0x7f.0.0.1/", "http://0/", "http://localhost:3000/",
    "http://dagster.localhost/", "http://LOCALHOST./",
])
def test_intake_refuses_a_literal_inward_address_or_localhost(url):
    problem = CallbackPolicy().intake_problem(url)
    assert problem and problem.startswith("callback_url refused:")


def test_intake_leaves_names_to_the_relay_and_honours_the_allow_list_and_https_only():
    default = CallbackPolicy()
    assert default.intake_problem("https://hooks.example.com/cb") is None  # only the relay's lookup can tell
    assert default.intake_problem("http://93.184.216.34/cb") is None
    opened = CallbackPolicy.parse("127.0.0.1, localhost")
    assert opened.intake_problem("http://127.0.0.1:8000/cb") is None
    assert opened.intake_problem("http://localhost:8000/cb") is None
    strict = CallbackPolicy.parse("", https_only=True)
    assert "must be https" in strict.intake_problem("http://hooks.example.com/cb")
    assert strict.intake_problem("https://hooks.example.com/cb") is None


def test_an_intake_file_line_with_an_inward_callback_is_refused_with_its_line_number(monkeypatch):
    monkeypatch.delenv("FORGE_CALLBACK_ALLOW", raising=False)
    line = '{"processor": "p", "input": {}, "callback_url": "%s"}'
    lines = [line % "https://hooks.example.com/cb", line % "http://169.254.169.254/latest",
             line % "http://[::ffff:10.0.0.1]/", line % "http://127.0.0.1:9000/cb"]
    parsed = parse_lines(lines)
    assert parsed.lines == [1]
    assert [(e.line, "refused" in e.error) for e in parsed.errors] == [(2, True), (3, True), (4, True)]
    assert "169.254.169.254 is link-local" in parsed.errors[0].error

    monkeypatch.setenv("FORGE_CALLBACK_ALLOW", "127.0.0.1")  # the operator opened it
    assert parse_lines(lines).lines == [1, 4]
    assert parse_lines(lines, callback_policy=CallbackPolicy()).lines == [1]
