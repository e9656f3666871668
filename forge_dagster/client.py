"""The Python client, for teams that work in notebooks and services: submit jobs, wait for them, read what
became of them as a DataFrame, retry and cancel them.

    from forge_dagster import Forge
    forge = Forge.from_env()
    sent = forge.submit("ticket_triage", frame, ids="ticket_id")
    forge.wait(sent)
    forge.results(sent)

It talks to the store only (workers and Dagster do the work), through the engine's own roads: jobs are
checked and routed as every intake checks them (core/intake/routing), retry and cancel are the operator's
actions (core/ops/operator), output columns are flattened as `forge export` flattens them
(core/platform/exports). Wherever jobs are named, a Forge id or an intake id works.

Idempotent by id: a row's intake id is unique in the client's source (`client` unless told otherwise).
Submitting an id again does not make a second job and is not an error: the id of the job that already holds
it is returned (in `Submission.existing` too), whatever the row says now. A request that cannot be carried
out as asked (an unknown processor, a version that does not exist or is retired, an unknown id, a retry of
a job that succeeded, a cancel of a job that ended) raises OperatorError, a ValueError, and changes nothing.
"""

from __future__ import annotations

import json
import numbers
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

from forge_dagster.core.config import load_settings
from forge_dagster.core.intake.routing import processor_check
from forge_dagster.core.models import TERMINAL_JOB_STATES, JobSpec
from forge_dagster.core.ops.operator import ActionReport, OperatorError, cancel_jobs, resolve, retry_jobs
from forge_dagster.core.platform.estimates import Estimate, estimate_with_budgets
from forge_dagster.core.platform.exports import embeddings_array, outputs_frame
from forge_dagster.core.platform.processors import Processor
from forge_dagster.core.platform.registry import RegistryCatalog, load_catalog
from forge_dagster.core.runtime import open_store
from forge_dagster.core.store import ForgeStore

__all__ = ["Forge", "OperatorError", "Refusal", "Submission"]

CLIENT_SOURCE = "client"
# The first columns of `results`, with their kinds (exports' vocabulary); the output columns follow, then cost.
RESULT_COLUMNS = {"id": "integer", "intake_id": "string", "processor": "string", "version": "string",
                  "state": "string", "reason": "string"}
_POLL_FIRST_S, _POLL_MAX_S = 0.2, 2.0

Rows = Sequence[Mapping[str, Any]] | pd.DataFrame
Jobs = Any  # ids (Forge or intake, one or many), a Submission, or a DataFrame with an `id` column


@dataclass(frozen=True)
class Refusal:
    """A row `submit` did not take, and why."""

    row: int  # its position among the rows given (0-based)
    id: str | None  # its intake id, when it had one
    reason: str


@dataclass
class Submission:
    """What `submit` did: the Forge id of every row that is a job (new or already submitted under its
    intake id), in row order, and the rows it refused with their reasons."""

    ids: list[int] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    existing: list[int] = field(default_factory=list)  # those of `ids` submitted before under the same id

    def __len__(self) -> int:
        return len(self.ids)


class Forge:
    """A handle on one Forge store. `Forge.from_env()` opens the store of this environment (starting the
    embedded default when FORGE_DATABASE_URL is not set) and says on stderr which mode it runs in."""

    def __init__(self, store: ForgeStore, *, source: str = CLIENT_SOURCE, actor: str | None = None,
                 owns_store: bool = False) -> None:
        self.store, self.source, self.actor = store, source, actor
        self._owns_store = owns_store

    @classmethod
    def from_env(cls, *, source: str = CLIENT_SOURCE, actor: str | None = None, **store_kwargs: Any) -> Forge:
        """The store the `forge` command would open here; `source` names this client's intake ids (jobs
        are idempotent per source), `actor` who retries and cancels (default: the login name)."""
        settings = load_settings()
        # dagster=False: the client reads and writes the store only, Dagster's storage is not its business.
        runtime, store = open_store(settings, dagster=False, **store_kwargs)
        print(runtime.describe(settings), file=sys.stderr, flush=True)
        return cls(store, source=source, actor=actor, owns_store=True)

    def close(self) -> None:
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> Forge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- submit ----------------------------------------------------------------------------------------
    def submit(self, processor: str, rows: Rows, ids: Sequence[Any] | str | None = None,
               version: str | None = None, due_at: datetime | None = None) -> Submission:
        """Submit one job per row (a list of dicts, or a DataFrame whose empty cells count as missing) to
        `processor` (its active version, or `version`). `ids` are the rows' intake ids (a list, or the name
        of a column): a row whose id this client's source already holds is not submitted again, its job's
        id is returned. A row the processor's template cannot render, or whose id repeats an earlier row, is
        refused with its reason; the others go in. `due_at` (timezone-aware) says when answers are needed
        (an `auto` processor runs work due soon in realtime)."""
        catalog = load_catalog(self.store)
        pinned = _pinned(catalog, processor, version)
        if due_at is not None and (not isinstance(due_at, datetime) or due_at.tzinfo is None):
            raise OperatorError("due_at must be a timezone-aware datetime; nothing submitted")
        payloads = _payloads(rows)
        tally = _Tally(processor, _intake_ids(ids, rows, len(payloads)))
        first_row: dict[str, int] = {}
        for n, ext in enumerate(tally.intake_ids):
            if ext is not None and first_row.setdefault(ext, n) != n:
                tally.refused[n] = f"id {ext!r} repeats row {first_row[ext]}"
        held = self.store.jobs.by_intake_ids(self.source, list(first_row)) if first_row else {}
        check = processor_check(catalog)
        specs: list[tuple[int, JobSpec]] = []
        for n, (payload, ext) in enumerate(zip(payloads, tally.intake_ids, strict=True)):
            if n in tally.refused:
                continue
            if ext in held:
                tally.held(n, *held[ext])
                continue
            try:
                pinned_version, mode = check(processor, pinned.version, payload, due_at)
            except ValueError as exc:
                tally.refused[n] = str(exc)
                continue
            specs.append((n, JobSpec(processor, payload, external_id=ext, processor_version=pinned_version,
                                     mode=mode, max_attempts=pinned.max_attempts, due_at=due_at)))
        if not specs:
            return tally.submission()
        report = self.store.intake.enqueue([spec for _, spec in specs], source=self.source)
        rejected = {r.index: r.error for r in report.rejected}
        tally.jobs.update(zip([n for i, (n, _) in enumerate(specs) if i not in rejected], report.accepted,
                              strict=True))
        # A duplicate here was submitted by someone else since the look-up above: it is theirs, and ours.
        late = [specs[i][1].external_id for i in rejected if specs[i][1].external_id is not None]
        held = self.store.jobs.by_intake_ids(self.source, late) if late else {}
        for i, error in rejected.items():
            n, spec = specs[i]
            if spec.external_id in held:
                tally.held(n, *held[spec.external_id])
            else:
                tally.refused[n] = error
        return tally.submission()

    def estimate(self, processor: str, rows: Rows, version: str | None = None) -> Estimate:
        """What submitting `rows` to `processor` would cost, before anything is sent: tokens per request,
        USD at realtime and batch prices with and without prompt caching (worst case: full max_tokens of
        output), and each daily budget's verdict (`.admitted`, `.budgets`). Rows that would be refused are
        listed in `.refused`; nothing is written."""
        catalog = load_catalog(self.store)
        pinned = _pinned(catalog, processor, version)
        specs = [JobSpec(processor, payload, processor_version=pinned.version) for payload in _payloads(rows)]
        return estimate_with_budgets(self.store, catalog, specs)

    # -- wait and read ---------------------------------------------------------------------------------
    def wait(self, ids: Jobs, timeout: float | None = None, progress: bool = True) -> dict[str, int]:
        """Wait until every job named has ended (succeeded, invalid, failed, dead or cancelled); returns how
        many ended in each state. A progress bar is drawn on stderr when it is a terminal (and tqdm is
        installed). Raises TimeoutError, saying how many are still open, after `timeout` seconds."""
        job_ids = self._resolve(ids)
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = _progress_bar(len(job_ids)) if progress else None
        pause = _POLL_FIRST_S
        try:
            while True:
                states = self.store.jobs.states(job_ids)  # an archived job is gone from here: it ended
                still = [states[i] for i in job_ids if states.get(i, "succeeded") not in TERMINAL_JOB_STATES]
                if bar is not None:
                    bar.update(len(job_ids) - len(still) - bar.n)
                if not still:
                    archived = [i for i in job_ids if i not in states]
                    if archived:  # read where they are now
                        states.update((r["id"], r["state"]) for r in self.store.jobs.outcomes(ids=archived))
                    return _counts_of(states.values())
                if deadline is not None and time.monotonic() >= deadline:
                    by_state = ", ".join(f"{s} {n}" for s, n in sorted(_counts_of(still).items()))
                    raise TimeoutError(f"{len(still)} of {len(job_ids)} jobs still open after {timeout} s "
                                       f"({by_state})")
                left = float("inf") if deadline is None else deadline - time.monotonic()
                time.sleep(max(0.0, min(pause, left)))
                pause = min(_POLL_MAX_S, pause * 1.5)
        finally:
            if bar is not None:
                bar.close()

    def results(self, ids_or_processor: Jobs) -> pd.DataFrame:
        """What became of jobs, one row each: id (Forge's), intake_id, processor, version, state, reason,
        then one column per property of the processor's response schema (nested objects as `parent.child`,
        as `forge export` makes them), then cost (USD booked so far). Give ids (in the order wanted) or a
        processor's name (all its jobs, oldest first)."""
        catalog = load_catalog(self.store, sync=False)
        name = ids_or_processor if isinstance(ids_or_processor, str) else None
        if name is not None and catalog.versions(name):
            rows = self.store.jobs.outcomes(processor=name)
        else:
            job_ids = self._resolve(ids_or_processor)
            place = {job_id: n for n, job_id in enumerate(job_ids)}
            rows = sorted(self.store.jobs.outcomes(ids=job_ids), key=lambda r: place[r["id"]])
        records = [{"id": r["id"], "intake_id": r["external_id"], "processor": r["processor"],
                    "version": r["processor_version"], "state": r["state"], "reason": r["reason"],
                    "output": r["output"]} for r in rows]
        versions = dict.fromkeys((r["processor"], r["processor_version"]) for r in rows)
        frame = outputs_frame(records, RESULT_COLUMNS, [catalog[key] for key in versions if key in catalog])
        frame["cost"] = pd.array([None if r["cost_usd"] is None else float(r["cost_usd"]) for r in rows],
                                 dtype="Float64")
        return frame

    def embeddings(self, processor: str, *, version: str | None = None) -> tuple[Any, Any]:
        """The vectors of an embeddings processor's succeeded jobs, straight from the store: (job ids as an
        int64 array, one float32 array of shape (jobs, dimensions)), in job order."""
        try:
            return embeddings_array(self.store, load_catalog(self.store, sync=False), processor, version=version)
        except (KeyError, ValueError) as exc:
            raise OperatorError(str(exc).strip("'")) from None

    # -- operator actions ------------------------------------------------------------------------------
    def retry(self, ids: Jobs = None, *, reason: str, version: str | None = None, attempts: int | None = None,
              states: Sequence[str] = (), processor: str | None = None, since: datetime | None = None
              ) -> ActionReport:
        """Send jobs that ended without success (dead, invalid, failed, cancelled) back to pending with a
        fresh attempt budget (`attempts`, else the one they had), on processor `version` when given. Name
        them, or pick them by `states` (and `processor`, `since`). The reason is recorded with each."""
        refs = self._refs(ids) if ids is not None else None
        if refs == []:  # an empty selection (a filtered frame with no rows): nothing to do
            return ActionReport("retry")
        return retry_jobs(self.store, refs, states=states,
                          processor=processor, since=since, version=version, attempts=attempts, reason=reason,
                          actor=self.actor)

    def cancel(self, ids: Jobs = None, *, reason: str, states: Sequence[str] = (), processor: str | None = None,
               since: datetime | None = None) -> ActionReport:
        """Cancel open jobs (they end `cancelled` with the reason; a late answer is refused). Name them, or
        pick them by `processor` (all its open jobs) and `states`, `since`."""
        refs = self._refs(ids) if ids is not None else None
        if refs == []:
            return ActionReport("cancel")
        return cancel_jobs(self.store, refs, states=states,
                           processor=processor, since=since, reason=reason, actor=self.actor)

    def _resolve(self, jobs: Jobs) -> list[int]:
        refs = self._refs(jobs)
        if not refs:
            raise OperatorError("no jobs named")
        return resolve(self.store, refs)

    @staticmethod
    def _refs(jobs: Jobs) -> list[Any]:
        """Job references from ids (one or many), a Submission, or a DataFrame with an `id` column."""
        if isinstance(jobs, Submission):
            return list(jobs.ids)
        if isinstance(jobs, pd.DataFrame):
            if "id" not in jobs.columns:
                raise OperatorError("a DataFrame names jobs by its `id` column, and this one has none")
            return jobs["id"].tolist()
        if isinstance(jobs, str | numbers.Integral):
            return [jobs]
        return list(jobs)


@dataclass
class _Tally:
    """Where each row of one `submit` stands: a job (new, or one its intake id already named) or a refusal."""

    processor: str
    intake_ids: list[str | None]
    jobs: dict[int, int] = field(default_factory=dict)  # row -> Forge id
    existing: set[int] = field(default_factory=set)  # rows whose id already named a job
    refused: dict[int, str] = field(default_factory=dict)  # row -> reason

    def held(self, row: int, job_id: int, processor: str) -> None:
        """Row `row`'s intake id is already job `job_id`'s: that job is the row's, if of the same processor."""
        if processor != self.processor:
            self.refused[row] = f"id {self.intake_ids[row]!r} is already job {job_id}, of processor {processor}"
        else:
            self.jobs[row] = job_id
            self.existing.add(row)

    def submission(self) -> Submission:
        order = sorted(self.jobs)
        return Submission(ids=[self.jobs[n] for n in order],
                          existing=[self.jobs[n] for n in order if n in self.existing],
                          refused=[Refusal(n, self.intake_ids[n], self.refused[n]) for n in sorted(self.refused)])


def _pinned(catalog: RegistryCatalog, processor: str, version: str | None) -> Processor:
    """The version new jobs of `processor` get (the active one, or `version`); OperatorError when there is
    none: an unknown name or version, a retired version, no active one."""
    try:
        return catalog.for_new_job(processor, version)
    except KeyError:
        known = ", ".join(sorted({p.name for p in catalog.all()})) or "none"
        what = f"processor {processor!r}" + (f" has no version {version}" if catalog.versions(processor)
                                              else f" is unknown (known: {known})")
        raise OperatorError(f"{what}; nothing submitted") from None
    except ValueError as exc:
        raise OperatorError(f"{exc}; nothing submitted") from None


def _payloads(rows: Rows) -> list[Any]:
    """Each row as a job's input. A DataFrame's empty cells (NaN, None, NaT) are left out, so a row that
    lacks a field its template needs is refused for it; its values become plain JSON ones."""
    if isinstance(rows, pd.DataFrame):
        records = json.loads(rows.to_json(orient="records", date_format="iso", date_unit="s"))
        return [{k: v for k, v in record.items() if v is not None} for record in records]
    if isinstance(rows, Mapping) or isinstance(rows, str | bytes):
        raise OperatorError("rows must be a list of dicts or a DataFrame; nothing submitted")
    return [dict(row) if isinstance(row, Mapping) else row for row in rows]


def _intake_ids(ids: Sequence[Any] | str | None, rows: Rows, count: int) -> list[str | None]:
    """The rows' intake ids: none, a list (one per row), or the name of a column of the rows."""
    if ids is None:
        return [None] * count
    if isinstance(ids, str):
        values = (rows[ids].tolist() if isinstance(rows, pd.DataFrame) and ids in rows.columns
                  else [row.get(ids) if isinstance(row, Mapping) else None for row in rows])
        if any(v is None or v != v for v in values):  # v != v: NaN
            raise OperatorError(f"ids={ids!r} names a column some rows lack; nothing submitted")
    else:
        values = list(ids)
    if len(values) != count:
        raise OperatorError(f"{len(values)} ids for {count} rows; nothing submitted")
    return [None if v is None else str(v) for v in values]


def _progress_bar(total: int):
    """A tqdm bar on stderr when it is a terminal and tqdm is installed, else None."""
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm  # imported when a bar is drawn, not by every service that imports the client
    except ImportError:
        return None
    return tqdm(total=total, unit="job", desc="forge", file=sys.stderr)


def _counts_of(states: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for state in states:
        counts[state] = counts.get(state, 0) + 1
    return counts
