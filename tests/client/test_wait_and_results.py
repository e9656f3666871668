"""Waiting on jobs and reading what became of them: `wait` returns when every job has ended (workers do the
work, on threads here) or raises TimeoutError saying how many are open; `results` is a DataFrame with the
schema's properties as columns (nested ones as parent.child) and the cost booked."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

import pandas as pd
import pytest

from forge_dagster import Forge
from forge_dagster.client import OperatorError
from forge_dagster.core.realtime.handler_worker import Worker
from tests.helpers import ROOT, forge_env, register_step
from tests.store.handlers import echo, off_schema

from .conftest import NESTED_SCHEMA, TICKET, realtime_ticket
from .test_submit import tickets


def test_wait_gives_up_after_its_timeout_saying_how_many_are_open(forge: Forge, store):
    sent = forge.submit(TICKET, tickets(3))  # no worker runs: they stay pending
    with pytest.raises(TimeoutError, match=r"^3 of 3 jobs still open after 0.3 s \(pending 3\)$"):
        forge.wait(sent, timeout=0.3, progress=False)


def test_wait_returns_when_the_worker_has_ended_every_job(forge: Forge, store, echo_step, background):
    sent = forge.submit("echo_step", [{"subject": f"s{i}", "n": i} for i in range(5)], ids=[f"e{i}" for i in range(5)])
    background.handler_worker(store, echo_step, echo)
    assert forge.wait(sent, timeout=60) == {"succeeded": 5}  # progress=True: no bar, stderr is no terminal
    assert forge.wait(["e0", sent.ids[1]], timeout=0) == {"succeeded": 2}, "ended jobs: no waiting"


def test_results_flatten_nested_outputs_and_keep_the_reason_of_an_invalid_answer(forge: Forge, store, echo_step):
    strict = register_step(store, "strict_step", "tests.store.handlers:off_schema", response_schema=NESTED_SCHEMA)
    good = forge.submit("echo_step", [{"subject": "hello", "n": 7}, {"subject": "bye"}], ids=["g1", "g2"])
    bad = forge.submit("strict_step", [{"subject": "x"}], ids=["b1"])

    Worker(store, echo, [echo_step], concurrency=1, idle_sleep_s=0.01).run(until_idle=True)
    Worker(store, off_schema, [strict], concurrency=1, idle_sleep_s=0.01).run(until_idle=True)

    frame = forge.results(["b1", *good.ids])  # the order asked for
    assert list(frame.columns) == ["id", "intake_id", "processor", "version", "state", "reason",
                                   "echo.subject", "echo.n", "cost"]
    assert frame["id"].tolist() == bad.ids + good.ids
    assert frame["state"].tolist() == ["invalid", "succeeded", "succeeded"]
    assert "schema" in frame["reason"][0] and frame["reason"][1] == "validated"
    assert frame["echo.subject"].tolist()[1:] == ["hello", "bye"]
    assert frame["echo.n"].dtype == "Int64" and frame["echo.n"][1] == 7 and pd.isna(frame["echo.n"][2])
    assert frame["cost"].isna().all(), "a handler step books no cost"
    assert forge.results("echo_step")["intake_id"].tolist() == ["g1", "g2"], "a processor's name: all its jobs"


def test_realtime_jobs_on_the_simulator_end_with_their_outputs_as_columns_and_their_cost(
    forge: Forge, store, sim, background,
):
    realtime_ticket(store, "7.0.0")
    sent = forge.submit(TICKET, tickets(4), ids=[f"t{i}" for i in range(4)], version="7.0.0")
    background.realtime(store, sim)
    assert forge.wait(sent, timeout=60) == {"succeeded": 4}

    frame = forge.results(sent)
    assert list(frame.columns) == ["id", "intake_id", "processor", "version", "state", "reason",
                                   "category", "priority", "summary", "cost"]
    assert set(frame["version"]) == {"7.0.0"} and set(frame["reason"]) == {"validated"}
    assert frame["category"].notna().all() and frame["summary"].str.len().gt(0).all()
    with store.transaction() as conn:
        booked = dict(conn.execute("SELECT job_id, sum(cost_usd)::float FROM costs GROUP BY job_id").fetchall())
    assert frame["cost"].tolist() == [booked[i] for i in sent.ids] and frame["cost"].gt(0).all()


def test_unknown_ids_are_named(forge: Forge, store):
    forge.submit(TICKET, tickets(1), ids=["known"])
    with pytest.raises(OperatorError, match="no job with id or intake id nope, 999999"):
        forge.results(["known", "nope", 999999])
    with pytest.raises(OperatorError, match="no job with id or intake id nope"):
        forge.wait("nope", timeout=1)
    with pytest.raises(OperatorError, match="no jobs named"):
        forge.results([])


def test_wait_draws_a_progress_bar_when_stderr_is_a_terminal(database_url: str, schema: str, forge: Forge, tmp_path):
    """A process whose stderr is a terminal (a pseudo-terminal here) sees the bar; the jobs it waits on
    ended (cancelled) before, so the bar is full at once."""
    sent = forge.submit(TICKET, tickets(2), ids=["p0", "p1"])
    forge.cancel(sent, reason="only the bar matters")
    code = ("from forge_dagster import Forge\n"
            "with Forge.from_env() as forge:\n"
            "    print(forge.wait(['p0', 'p1'], timeout=30))\n")
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24 x 100, as terminals are
    done = subprocess.run([sys.executable, "-c", code], env=forge_env(database_url, schema,
                          FORGE_HOME=str(tmp_path / "home")), cwd=ROOT, stdout=subprocess.PIPE, stderr=child,
                          text=True, timeout=120)
    os.close(child)
    shown = _read_all(main)
    assert done.returncode == 0, shown[-2000:]
    assert done.stdout.strip() == "{'cancelled': 2}"
    assert "forge: 100%" in shown and "2/2" in shown, shown[-2000:]


def _read_all(fd: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the terminal's other side is closed and everything was read
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks).decode(errors="replace")
