"""Intake for the pipeline: JSONL files dropped in the inbox, jobs from the Python API, and rows other
applications inserted, all routed the same way (routing.py).

Each file is enqueued (idempotently: its lines carry ids derived from the file's content when they
have none) and moved to `processed/` with a report of the lines it refused. An entry that cannot be read
(a dangling link, a folder, a FIFO, no permission, the wrong encoding) is moved to `refused/` with a report
naming the problem, and the rest goes on: no entry holds up the inbox.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from forge_dagster.core.intake.lines import UnreadableFile, file_lines, parse_lines
from forge_dagster.core.intake.routing import processor_check
from forge_dagster.core.platform.catalog import ProcessorCatalog
from forge_dagster.core.store import ForgeStore, JobSpec


@dataclass
class IntakeReport:
    files: int = 0
    accepted: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    external_accepted: int = 0
    external_refused: int = 0
    problems: list[dict[str, str]] = field(default_factory=list)  # inbox entries not read or not moved, why


@dataclass(frozen=True)
class InboxEntry:
    path: Path
    modified_ms: int  # of the entry itself (a link's own time, not its target's)


DONE, REFUSED = "processed", "refused"  # where taken-in files and entries that could not be read go
_KINDS = {stat.S_IFDIR: "a folder", stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket",
          stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}


def _with_ids(specs: list[JobSpec], lines: list[int], digest: str) -> list[JobSpec]:
    """Give id-less lines an id from the file's content and line, so re-submitting a file is harmless."""
    return [
        s if s.external_id else dataclasses.replace(s, external_id=f"{digest}:{n}")
        for s, n in zip(specs, lines, strict=True)
    ]


def inbox_entries(inbox: Path) -> list[InboxEntry]:
    """The `*.jsonl` entries waiting in `inbox`, by name, whatever each one is (a file, a link, a dangling
    one, a folder, a FIFO): the listing never raises for an entry, intake sets aside what it cannot read."""
    found = []
    try:
        with os.scandir(inbox) as scan:
            for entry in scan:
                if not entry.name.endswith(".jsonl"):
                    continue
                try:
                    modified = entry.stat(follow_symlinks=False).st_mtime_ns // 1_000_000
                except OSError:  # gone since the listing
                    continue
                found.append(InboxEntry(Path(entry.path), modified))
    except OSError:  # no inbox (yet), or one that cannot be listed
        return []
    return sorted(found, key=lambda e: e.path.name)


def inbox_waiting(inbox: Path) -> tuple[int, int]:
    """(entries waiting in `inbox`, the newest one's modification time in ms), for the pending-work sensor."""
    entries = inbox_entries(inbox)
    return len(entries), max((e.modified_ms for e in entries), default=0)


def _not_a_file(mode: int) -> str | None:
    """What an entry that is not a regular file is ("a folder, not a file"), else None."""
    if stat.S_ISREG(mode):
        return None
    return f"{_KINDS.get(stat.S_IFMT(mode), 'not a regular file')}, not a file"


def read_intake_file(path: Path) -> bytes:
    """The bytes of an intake file. UnreadableFile names why not: a dangling link, a folder or another entry
    that is not a regular file (never opened, so a FIFO cannot hang intake), no permission, a read error."""
    try:
        problem = _not_a_file(os.stat(path).st_mode)
        if problem:
            raise UnreadableFile(problem)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO swapped in since the stat cannot hang it
    except FileNotFoundError:
        try:
            target = os.readlink(path)
        except OSError:  # not a link: the file is gone (another drain took it)
            raise UnreadableFile("no such file") from None
        raise UnreadableFile(f"a dangling link (its target {target} does not exist)") from None
    except OSError as exc:
        raise UnreadableFile(f"cannot be read: {(exc.strerror or str(exc)).lower()}") from None
    with os.fdopen(fd, "rb") as file:
        problem = _not_a_file(os.fstat(file.fileno()).st_mode)
        if problem:
            raise UnreadableFile(problem)
        try:
            return file.read()
        except OSError as exc:
            raise UnreadableFile(f"cannot be read: {(exc.strerror or str(exc)).lower()}") from None


def intake_file(
    store: ForgeStore, catalog: ProcessorCatalog, path: Path, *, source: str | None = None
) -> IntakeReport:
    """Enqueue one JSONL file; bad lines are reported with their numbers, good ones go in. UnreadableFile
    names why a file cannot be taken in at all (read_intake_file, file_lines)."""
    data = read_intake_file(path)
    digest = hashlib.sha256(data).hexdigest()[:16]
    parsed = parse_lines(file_lines(data), check_processor=processor_check(catalog))
    specs = _with_ids(parsed.specs, parsed.lines, digest)
    report = store.intake.enqueue(specs, source=source or f"file:{path.name}")
    rejected = [{"line": e.line, "error": e.error} for e in parsed.errors]
    rejected += [{"line": parsed.lines[r.index], "error": r.error} for r in report.rejected]
    return IntakeReport(
        files=1, accepted=len(report.accepted), rejected=sorted(rejected, key=lambda r: r["line"])
    )


def file_away(path: Path, folder: Path, report: dict[str, Any]) -> str | None:
    """Move the entry `path` into `folder` beside its report, under a name no earlier one holds: `x.jsonl`
    with `x.jsonl.report.json`, then `x.2.jsonl` with `x.2.jsonl.report.json`, and so on; nothing is
    overwritten. The report's name is claimed first (created exclusively), so two drains never pick the
    same. The name it got, or None when the entry was gone (another drain took it); OSError if it cannot
    be moved."""
    folder.mkdir(exist_ok=True)
    stem = path.name.removesuffix(".jsonl")
    for n in itertools.count(1):
        name = path.name if n == 1 else f"{stem}.{n}.jsonl"
        if os.path.lexists(folder / name):
            continue
        try:
            claimed = open(folder / f"{name}.report.json", "x")  # closed by the `with` below
        except FileExistsError:
            continue
        break
    with claimed:
        try:
            os.rename(path, folder / name)
        except OSError as exc:
            os.unlink(claimed.name)
            if isinstance(exc, FileNotFoundError):
                return None
            raise
        json.dump(report, claimed, indent=1)
    return name


def drain_inbox(store: ForgeStore, catalog: ProcessorCatalog, inbox: Path) -> IntakeReport:
    """Take in every entry waiting in `inbox` (inbox_entries): a file is enqueued and moved to `processed/`,
    an entry that cannot be read to `refused/`, each beside a report of its own (file_away). One entry's
    problem never stops the others."""
    total = IntakeReport()
    for entry in inbox_entries(inbox):
        name = entry.path.name
        record: dict[str, Any] = {"file": name, "taken_at": datetime.now(UTC).isoformat(timespec="seconds")}
        try:
            report = intake_file(store, catalog, entry.path)
        except UnreadableFile as exc:
            record.update(accepted=0, rejected=[], problem=str(exc))
            folder = REFUSED
        else:
            record.update(accepted=report.accepted, rejected=report.rejected)
            folder = DONE
        try:
            if file_away(entry.path, inbox / folder, record) is None:
                continue  # another drain took it in
        except OSError as exc:  # left in the inbox and tried again next time (its lines then are duplicates)
            record["problem"] = f"{record.get('problem', 'taken in')}; could not be moved to {folder}/: {exc}"
        if "problem" in record:
            total.problems.append({"file": name, "problem": record["problem"]})
        if folder == DONE:
            total.files += 1
            total.accepted += report.accepted
            total.rejected += [{"file": name, **r} for r in report.rejected]
    return total


