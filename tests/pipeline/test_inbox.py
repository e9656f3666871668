"""The inbox never blocks the pipeline: an entry that cannot be read (a dangling link, a folder, a FIFO, no
permission, a file in UTF-16 or UTF-32) is moved to `refused/` with a report naming the problem while the
rest is taken in; a UTF-8 byte-order mark is accepted; every report is kept, numbered, never overwritten."""

from __future__ import annotations

import codecs
import json
import logging
import os
import shutil
import subprocess
import sys

import dagster as dg
import pytest

from forge_dagster.assets.batch_pipeline import job_intake
from forge_dagster.core.intake.inbox import drain_inbox, inbox_waiting
from forge_dagster.sensors.batch_sensors import pending_work_sensor
from tests.helpers import ROOT
from tests.pipeline.conftest import ticket, write_inbox
from tests.pipeline.test_engine import enqueue


def jsonl(lines: list[dict]) -> str:
    return "".join(json.dumps(line) + "\n" for line in lines)


def report_of(folder, name: str) -> dict:
    return json.loads((folder / f"{name}.report.json").read_text())


@pytest.mark.timeout(120)  # a scan that opened the FIFO would wait here for a writer forever
def test_unreadable_entries_are_set_aside_and_the_rest_of_the_pipeline_goes_on(
    resources, store, tmp_path, monkeypatch,
):
    monkeypatch.setenv("FORGE_HOME", str(tmp_path / "home"))
    inbox = write_inbox(tmp_path / "home" / "inbox", [ticket(i) for i in range(3)], name="good.jsonl")
    os.symlink(tmp_path / "gone.jsonl", inbox / "dangling.jsonl")
    (inbox / "folder.jsonl").mkdir()
    (inbox / "folder.jsonl" / "inside.txt").write_text("kept as it was")
    os.mkfifo(inbox / "fifo.jsonl")
    lines = jsonl([ticket(10), ticket(11)])
    (inbox / "utf16.jsonl").write_bytes(lines.encode("utf-16"))  # with its byte-order mark
    (inbox / "utf16be.jsonl").write_bytes(lines.encode("utf-16-be"))  # without one
    (inbox / "utf32.jsonl").write_bytes(lines.encode("utf-32"))
    (inbox / "bom.jsonl").write_bytes(codecs.BOM_UTF8 + jsonl([ticket(20), ticket(21)]).encode())
    # Bytes that are not UTF-8 inside one line refuse that line only, with its number.
    latin1 = '{"id": "caf\xe9"}\n'.encode("latin-1")
    (inbox / "latin1.jsonl").write_bytes(jsonl([ticket(30)]).encode() + latin1)
    enqueue(store, [ticket(40)])  # due work from another source, which the inbox must not hold up

    instance = dg.DagsterInstance.ephemeral()
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        first = pending_work_sensor(context)
    [request] = first.run_requests
    assert request.tags["forge/due_jobs"] == "1"
    intake = dg.materialize([job_intake], instance=instance, resources=resources,
                            run_config=request.run_config)
    assert intake.success
    meta = intake.asset_materializations_for_node("job_intake")[0].metadata
    assert (meta["accepted"].value, meta["rejected"].value, meta["inbox_problems"].value) == (6, 1, 6)
    assert store.jobs.counts() == {"pending": 7}
    warnings = [e.user_message for e in instance.all_logs(intake.run_id) if e.level == logging.WARNING]
    assert any("inbox entry fifo.jsonl: a FIFO, not a file" in m for m in warnings)  # in the run's log too

    assert not list(inbox.glob("*.jsonl"))  # nothing is left to be tried again each tick
    processed, refused = inbox / "processed", inbox / "refused"
    assert sorted(p.name for p in processed.glob("*.jsonl")) == ["bom.jsonl", "good.jsonl", "latin1.jsonl"]
    bom = report_of(processed, "bom.jsonl")
    assert (bom["file"], bom["accepted"], bom["rejected"]) == ("bom.jsonl", 2, [])
    assert [r["line"] for r in report_of(processed, "latin1.jsonl")["rejected"]] == [2]
    assert "not valid UTF-8: byte 0xe9" in report_of(processed, "latin1.jsonl")["rejected"][0]["error"]
    set_aside = ["dangling.jsonl", "folder.jsonl", "fifo.jsonl",
                 "utf16.jsonl", "utf16be.jsonl", "utf32.jsonl"]
    problems = {name: report_of(refused, name)["problem"] for name in set_aside}
    assert sorted(p.name for p in refused.glob("*.jsonl")) == sorted(set_aside)
    gone = tmp_path / "gone.jsonl"
    assert problems["dangling.jsonl"] == f"a dangling link (its target {gone} does not exist)"
    assert problems["folder.jsonl"] == "a folder, not a file"
    assert problems["fifo.jsonl"] == "a FIFO, not a file"
    assert problems["utf16.jsonl"] == "wrong encoding (UTF-16LE; Forge reads UTF-8)"
    assert problems["utf16be.jsonl"] == "wrong encoding (UTF-16BE; Forge reads UTF-8)"
    assert problems["utf32.jsonl"] == "wrong encoding (UTF-32LE; Forge reads UTF-8)"
    # Set aside as they were: the link still names its target, the folder keeps what it held.
    assert os.readlink(refused / "dangling.jsonl") == str(tmp_path / "gone.jsonl")
    assert (refused / "folder.jsonl" / "inside.txt").read_text() == "kept as it was"
    assert (refused / "utf16.jsonl").read_bytes() == lines.encode("utf-16")

    assert inbox_waiting(inbox) == (0, 0)
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        after = pending_work_sensor(context)
    assert [r.tags["forge/due_jobs"] for r in after.run_requests] == ["7"]


def test_the_sensor_lists_a_dangling_link_without_failing_its_tick(resources, store, tmp_path, monkeypatch):
    """Each tick that met a dangling link raised FileNotFoundError before, so no work went in at all."""
    monkeypatch.setenv("FORGE_HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "inbox").mkdir(parents=True)
    os.symlink(tmp_path / "gone.jsonl", tmp_path / "home" / "inbox" / "x.jsonl")
    with dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), resources=resources) as context:
        result = pending_work_sensor(context)
    [request] = result.run_requests  # an intake run, which will set the link aside
    inbox = str(tmp_path / "home" / "inbox")
    assert request.run_config == {"ops": {"job_intake": {"config": {"inbox": inbox}}}}


def test_a_name_dropped_again_keeps_every_file_and_every_report(store, catalog, tmp_path):
    inbox = tmp_path / "inbox"
    for round_ in range(3):
        write_inbox(inbox, [ticket(10 * round_ + i) for i in range(round_ + 1)], name="x.jsonl")
        (inbox / "bad.jsonl").mkdir()
        drain_inbox(store, catalog, inbox)
    processed, refused = inbox / "processed", inbox / "refused"
    names = ["x.jsonl", "x.2.jsonl", "x.3.jsonl"]
    assert sorted(p.name for p in processed.iterdir()) == sorted(names + [f"{n}.report.json" for n in names])
    assert [report_of(processed, n)["accepted"] for n in names] == [1, 2, 3]
    assert [report_of(processed, n)["file"] for n in names] == ["x.jsonl"] * 3
    assert [len((processed / n).read_text().splitlines()) for n in names] == [1, 2, 3]
    assert [report_of(refused, n)["problem"] for n in ["bad.jsonl", "bad.2.jsonl", "bad.3.jsonl"]] == \
        ["a folder, not a file"] * 3
    assert store.jobs.counts() == {"pending": 6}


PERMISSION_DRAIN = """
import json, sys
from pathlib import Path
from forge_dagster.core.intake.inbox import drain_inbox
report = drain_inbox(None, None, Path(sys.argv[1]))  # an entry that cannot be read never reaches the store
print(json.dumps({"accepted": report.accepted, "problems": report.problems}))
"""


def test_a_file_without_read_permission_is_set_aside_by_itself(store, catalog, tmp_path):
    """A real permission error: as root, the drain runs in a process without the capabilities that bypass
    file modes (it has no database to reach: the embedded one's socket is behind those modes too); the
    file is set aside, and the next drain takes in what came after it."""
    inbox = write_inbox(tmp_path / "inbox", [ticket(2)], name="locked.jsonl")
    (inbox / "locked.jsonl").chmod(0)
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    if drop:
        assert shutil.which("setpriv"), "util-linux setpriv is needed to take root's file-mode bypass away"
    done = subprocess.run([*drop, sys.executable, "-c", PERMISSION_DRAIN, str(inbox)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"accepted": 0, "problems": [{"file": "locked.jsonl",
                                                                    "problem": "cannot be read: permission denied"}]}
    assert report_of(inbox / "refused", "locked.jsonl")["problem"] == "cannot be read: permission denied"
    write_inbox(inbox, [ticket(1)], name="good.jsonl")
    assert drain_inbox(store, catalog, inbox).accepted == 1
    assert store.jobs.counts() == {"pending": 1}


def test_a_file_that_cannot_be_moved_is_reported_and_the_others_still_go_through(store, catalog, tmp_path):
    inbox = write_inbox(tmp_path / "inbox", [ticket(1)], name="a.jsonl")
    (inbox / "processed").write_text("a file where the folder should be")
    (inbox / "b.jsonl").mkdir()
    report = drain_inbox(store, catalog, inbox)
    assert report.accepted == 1 and store.jobs.counts() == {"pending": 1}
    [stuck, refused] = report.problems
    assert stuck["file"] == "a.jsonl"
    assert stuck["problem"].startswith("taken in; could not be moved to processed/: [Errno 17] File exists")
    assert refused == {"file": "b.jsonl", "problem": "a folder, not a file"}
    assert (inbox / "a.jsonl").exists() and (inbox / "refused" / "b.jsonl").is_dir()

    again = drain_inbox(store, catalog, inbox)  # tried again: its lines are already in, nothing twice
    assert again.accepted == 0 and "duplicate id 't1'" in again.rejected[0]["error"]
    assert store.jobs.counts() == {"pending": 1}
