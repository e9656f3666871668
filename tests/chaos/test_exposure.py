"""Secrets and exposure after a full demo with recognisable fake keys: no key in the logs, Dagster's event
log and asset metadata, Forge's database or the exported files; every server Forge starts listens on
127.0.0.1 unless told otherwise."""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from forge_dagster.core.runtime import DAGSTER_DATABASE, start_embedded_postgres, with_database
from tests.chaos.harness import PROVIDER_ENV, ROOT, SimulatorProcess
from tests.helpers import forge_env, wait_until

pytestmark = pytest.mark.chaos

OPENAI_KEY = "sk-forgetest-SECRET-OPENAI-7d1c9e4b2a6f8035"
ANTHROPIC_KEY = "sk-ant-forgetest-SECRET-ANTHROPIC-3e8a5c0f1b9d2746"
# Whole keys, and the parts that would betray a key cut short or wrapped.
LEAKS = (OPENAI_KEY, ANTHROPIC_KEY, "SECRET-OPENAI", "SECRET-ANTHROPIC", "7d1c9e4b2a6f", "3e8a5c0f1b9d")


@dataclass
class Exposure:
    """Everything a full demo left behind that someone could read."""

    home: Path
    database_url: str
    logs: dict[str, str] = field(default_factory=dict)  # command -> stdout + stderr
    forge_rows: dict[str, list[str]] = field(default_factory=dict)  # table -> rows as text
    dagster_rows: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)  # exported and written files


def _forge(env: dict[str, str], *args: str, timeout: float = 300) -> str:
    proc = subprocess.run([sys.executable, "-m", "forge_dagster.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"forge {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def _dump(url: str, schema: str) -> dict[str, list[str]]:
    """Every row of every table in `schema`, each row as text (every column, text and jsonb alike)."""
    with psycopg.connect(url) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s AND table_type = 'BASE TABLE'",
            (schema,))]
        return {t: [r[0] for r in conn.execute(
            sql.SQL("SELECT t::text FROM {}.{} t").format(sql.Identifier(schema), sql.Identifier(t)))]
            for t in tables}


@pytest.fixture(scope="module")
def exposed(tmp_path_factory) -> Iterator[Exposure]:
    """`forge demo --jobs 50` on the embedded default in a fresh FORGE_HOME, with fake keys pointed at a
    simulator, then exports; every log, row and file it left. The embedded PostgreSQL stops afterwards."""
    home = tmp_path_factory.mktemp("forge-home")
    sim = SimulatorProcess(seed=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORGE_") and k not in PROVIDER_ENV}
    env.update({"FORGE_HOME": str(home), "PYTHONPATH": str(ROOT), "OPENAI_API_KEY": OPENAI_KEY,
                "ANTHROPIC_API_KEY": ANTHROPIC_KEY, "OPENAI_BASE_URL": sim.openai_base_url,
                "ANTHROPIC_BASE_URL": sim.anthropic_base_url})
    try:
        exposure = Exposure(home, "")
        exposure.logs["demo"] = _forge(env, "-v", "demo", "--jobs", "50", "--json", "--timeout", "240")
        exports = home / "exports"
        exports.mkdir()
        exposure.logs["export csv"] = _forge(env, "-v", "export", "ticket_triage", "--format", "csv",
                                             "--output", str(exports / "tickets.csv"))
        exposure.logs["export parquet"] = _forge(env, "-v", "export", "review_sentiment", "--format", "parquet",
                                                 "--output", str(exports / "reviews.parquet"))
        exposure.logs["status"] = _forge(env, "-v", "status", "--json")
        exposure.database_url = start_embedded_postgres(home)  # the server the demo started, still running
        exposure.forge_rows = _dump(exposure.database_url, "forge")
        exposure.dagster_rows = _dump(with_database(exposure.database_url, DAGSTER_DATABASE), "public")
        exposure.files = {str(p.relative_to(home)): p.read_bytes() for p in home.rglob("*")
                          if p.is_file() and "pg" not in p.relative_to(home).parts[:1]}
        yield exposure
    finally:
        subprocess.run([sys.executable, "-m", "forge_dagster.cli", "stop"], env=env, cwd=ROOT,
                       capture_output=True, timeout=120)
        sim.stop()


def _leaks(text: str) -> list[str]:
    return [leak for leak in LEAKS if leak in text]


def test_the_demo_ran_with_the_fake_keys_against_the_simulator(exposed):
    assert '"jobs_total": 50' in exposed.logs["demo"]
    assert len(exposed.forge_rows["jobs"]) == 50 and exposed.dagster_rows["event_logs"]
    assert any(name.endswith("tickets.csv") for name in exposed.files)


def test_no_key_in_any_log_the_commands_wrote(exposed):
    found = {command: _leaks(text) for command, text in exposed.logs.items()}
    assert not any(found.values()), found


def test_no_key_in_any_table_of_the_forge_schema(exposed):
    found = {table: _leaks("\n".join(rows)) for table, rows in exposed.forge_rows.items()}
    assert not any(found.values()), {t: f for t, f in found.items() if f}


def test_no_key_in_dagster_event_logs_runs_or_asset_metadata(exposed):
    assert {"event_logs", "runs"} <= set(exposed.dagster_rows)
    found = {table: _leaks("\n".join(rows)) for table, rows in exposed.dagster_rows.items()}
    assert not any(found.values()), {t: f for t, f in found.items() if f}


def test_no_key_in_exported_or_written_files(exposed):
    found = {name: [leak for leak in LEAKS if leak.encode() in data] for name, data in exposed.files.items()}
    assert not any(found.values()), {n: f for n, f in found.items() if f}


# -- listening sockets -----------------------------------------------------------------------------------
def _listening(pid: int) -> set[str]:
    """The addresses `pid` listens on over TCP (from /proc: its socket inodes, matched in /proc/net)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if match := re.fullmatch(r"socket:\[(\d+)\]", target):
            inodes.add(match[1])
    found = set()
    for table, width in (("tcp", 8), ("tcp6", 32)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # LISTEN
                found.add(_address(local.split(":")[0], width))
    return found


def _address(hex_address: str, width: int) -> str:
    raw = bytes.fromhex(hex_address)
    if width == 8:
        return ".".join(str(b) for b in reversed(raw))
    words = [raw[i:i + 4][::-1] for i in range(0, 16, 4)]  # /proc/net/tcp6 stores 32-bit words in host order
    return str(ipaddress.IPv6Address(b"".join(words)))


LOOPBACK = {"127.0.0.1", "::1"}


def test_the_embedded_postgresql_listens_on_loopback_only(exposed):
    pid = int((exposed.home / "pg" / "postmaster.pid").read_text().split()[0])
    assert _listening(pid) <= LOOPBACK, _listening(pid)


def _serve(args: list[str], env: dict[str, str], banner: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "forge_dagster.cli", *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = ""
    for line in proc.stdout:
        if banner in line:
            return proc, line
    proc.kill()
    raise AssertionError(f"forge {' '.join(args)} did not start: {line!r}")


@pytest.mark.parametrize(("args", "banner", "expected"), [
    (["sim", "--port", "0"], "listening on", LOOPBACK),
    (["metrics", "--port", "0"], "Prometheus metrics on", LOOPBACK),
    (["sim", "--port", "0", "--host", "0.0.0.0"], "listening on", {"0.0.0.0"}),  # told otherwise
])
def test_servers_forge_starts_bind_to_loopback_unless_told_otherwise(args, banner, expected, database_url, schema):
    proc, line = _serve(args, forge_env(database_url, schema), banner)
    try:
        addresses = wait_until(lambda: _listening(proc.pid), timeout_s=30, what="the server to listen")
        assert addresses <= expected, (line, addresses)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_the_embedded_redis_listens_on_a_unix_socket_and_no_tcp_port(tmp_path):
    import redis

    from forge_dagster.core.config import ForgeSettings
    from forge_dagster.core.runtime import redis_url

    url = redis_url(ForgeSettings(FORGE_HOME=tmp_path))
    assert url.startswith("unix://")
    client = redis.Redis.from_url(url)
    try:
        assert client.config_get("port") == {"port": "0"}
        assert _listening(int(client.info("server")["process_id"])) == set()
    finally:
        try:
            client.shutdown(nosave=True)
        except redis.ConnectionError:
            pass  # the server is gone: what shutdown does
        client.close()
