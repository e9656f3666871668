"""An operator's actions on jobs: find them (by Forge id or intake id), read one job's story, list them,
retry the ones that ended without success and cancel open ones.

Bad input changes nothing: an unknown id, a retry of a job that succeeded (or is still open), a cancel of
a job that already ended, a version that does not exist or is retired, or no reason each raise
OperatorError before anything is written. A job whose state changes between that check and the action
(a worker finishing it, say) is left alone and reported as skipped; the store's row lock and fence decide
who wins, never both.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from forge_dagster.core.models import OPEN_JOB_STATES, RETRYABLE_JOB_STATES
from forge_dagster.core.platform.registry import load_catalog
from forge_dagster.core.store import ForgeStore

RETRY_STATES = sorted(RETRYABLE_JOB_STATES)
CANCEL_STATES = sorted(OPEN_JOB_STATES)


class OperatorError(ValueError):
    """An operator's request that cannot be carried out as asked; nothing was changed."""


@dataclass
class ActionReport:
    """What an action changed: {job id: the state it left}, and the jobs it left alone with why."""

    action: str
    changed: dict[int, str] = field(default_factory=dict)
    skipped: list[tuple[int, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"action": self.action, "changed": len(self.changed),
                "jobs": [{"id": i, "from": s} for i, s in sorted(self.changed.items())],
                "skipped": [{"id": i, "why": why} for i, why in self.skipped]}


def operator_name(actor: str | None = None) -> str:
    """The actor recorded in job events: `operator:<who>` (the login name when not given)."""
    try:
        who = actor or getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        who = "unknown"
    return who if who.startswith("operator:") else f"operator:{who}"


def resolve(store: ForgeStore, refs: Iterable[str | int]) -> list[int]:
    """Forge job ids for `refs`: a number that is a Forge job id is that job; anything else is an intake id
    (the `external_id` a job came in with). Raises OperatorError naming every ref that matches no job, or
    an intake id that several sources used (give the Forge id then)."""
    ids: list[int] = []
    unknown, ambiguous = [], []
    refs = [str(r).strip() for r in refs]
    numeric = [int(r) for r in refs if r.isdigit()]
    existing = set(store.jobs.states(numeric)) if numeric else set()
    by_intake_id = store.jobs.by_external_ids([r for r in refs if not (r.isdigit() and int(r) in existing)])
    for ref in refs:
        if ref.isdigit() and int(ref) in existing:
            ids.append(int(ref))
            continue
        found = by_intake_id.get(ref, [])
        if len(found) == 1:
            ids.append(found[0][0])
        elif found:
            ambiguous.append(f"{ref} (jobs {', '.join(str(i) for i, _ in found)} from sources "
                             f"{', '.join(s for _, s in found)})")
        else:
            unknown.append(ref)
    problems = ([f"no job with id or intake id {', '.join(unknown)}"] if unknown else []) + \
               ([f"intake id used by several sources, give the Forge id: {'; '.join(ambiguous)}"] if ambiguous else [])
    if problems:
        raise OperatorError("; ".join(problems))
    return list(dict.fromkeys(ids))


def job_story(store: ForgeStore, ref: str | int) -> dict[str, Any]:
    """One job with everything that happened to it: its row (state, reason, version, raw provider body,
    validator errors, output), its events grouped by attempt, collected answers, ledger rows, accepted
    outputs and the batch it rode in. An archived job (by Forge id) is read from the archive."""
    try:
        [job_id] = resolve(store, [ref])
        job = store.jobs.get(job_id)
    except OperatorError:
        found = store.operations.find_job(int(ref)) if str(ref).strip().isdigit() else None
        if not found:
            raise
        job_id, job = int(ref), dict(found)
    story = store.jobs.story(job_id)
    attempts: dict[int, list[dict[str, Any]]] = {}
    for event in story["events"]:
        attempts.setdefault(int(event["attempt"] or 0), []).append(event)
    batch = store.operations.find_batch(job["batch_id"]) if job.get("batch_id") else None
    job.pop("lease_token", None)  # a live lease token would let its reader write as the worker
    return {"job": job, "attempts": attempts, **story, "batch": batch}


def _require_reason(reason: str | None) -> str:
    if not reason or not reason.strip():
        raise OperatorError("say why (--reason): it is recorded with every job the action changes")
    return reason.strip()[:500]


def _select(store: ForgeStore, refs: Sequence[str | int] | None, states: Sequence[str], allowed: Sequence[str],
            processor: str | None, since: datetime | None, verb: str) -> tuple[list[int], dict[str, Any]]:
    """The jobs an action applies to, and the selector recorded with it. Ids name jobs that must all be in
    `allowed` states (else OperatorError, nothing changed); a filter picks the jobs in `states`."""
    if refs:
        if since is not None:
            raise OperatorError("give job ids or a filter (--state/--processor/--since), not both")
        ids = resolve(store, refs)
        current = store.jobs.states(ids)
        wrong = [f"{i} is {current[i]}" for i in ids if current.get(i) not in allowed]
        if wrong:
            raise OperatorError(f"cannot {verb} {', '.join(wrong)} (only {', '.join(allowed)} jobs); nothing changed")
        return ids, {"ids": ids}
    bad = [s for s in states if s not in allowed]
    if not states or bad:
        raise OperatorError(f"give job ids, or --state among {', '.join(allowed)}"
                            + (f" (not {', '.join(bad)})" if bad else ""))
    ids = store.jobs.select_ids(states=states, processor=processor, since=since)
    return ids, {"states": list(states), "processor": processor, "since": since.isoformat() if since else None}


def retry_jobs(store: ForgeStore, refs: Sequence[str | int] | None = None, *, states: Sequence[str] = (),
               processor: str | None = None, since: datetime | None = None, version: str | None = None,
               attempts: int | None = None, reason: str | None = None, actor: str | None = None) -> ActionReport:
    """Retry jobs that ended without success (dead, invalid, failed, cancelled): back to pending with a
    fresh attempt budget (`attempts`, else the budget they were given), on processor `version` when given.
    Give ids (Forge or intake ids) or a filter (`states`, optionally `processor` and `since`)."""
    reason = _require_reason(reason)
    if attempts is not None and attempts < 1:
        raise OperatorError("--attempts must be at least 1")
    ids, selector = _select(store, refs, states, RETRY_STATES, processor, since, "retry")
    mode = None
    if version is not None:
        mode = _version_mode(store, ids, version)
        selector["version"] = version
    report = ActionReport("retry")
    if ids:
        report.changed = store.jobs.retry(ids, reason=f"retry: {reason}", actor=operator_name(actor),
                                          selector=selector, version=version, mode=mode, budget=attempts)
    report.skipped = [(i, "its state changed before the retry reached it") for i in ids if i not in report.changed]
    return report


def cancel_jobs(store: ForgeStore, refs: Sequence[str | int] | None = None, *, states: Sequence[str] = (),
                processor: str | None = None, since: datetime | None = None, reason: str | None = None,
                actor: str | None = None) -> ActionReport:
    """Cancel open jobs: they end `cancelled` with the reason; a worker holding one finds its write refused
    and a late provider result for it is not accepted. Give ids or a filter (`processor`, `states` among the
    open ones: all open states when only a processor is given)."""
    reason = _require_reason(reason)
    if not refs and processor and not states:
        states = CANCEL_STATES
    ids, selector = _select(store, refs, states, CANCEL_STATES, processor, since, "cancel")
    report = ActionReport("cancel")
    if ids:
        report.changed = store.jobs.cancel(ids, reason=f"cancelled: {reason}", actor=operator_name(actor),
                                           selector=selector)
    report.skipped = [(i, "it ended before the cancel reached it") for i in ids if i not in report.changed]
    return report


def _version_mode(store: ForgeStore, ids: Sequence[int], version: str) -> str | None:
    """The mode jobs retried on `version` run in (None: keep theirs). Raises OperatorError when the version
    is not registered for the jobs' processor, is retired, or cannot take their jobs."""
    held = store.jobs.processors_and_modes(ids)
    names = sorted({name for name, _ in held})
    if len(names) > 1:
        raise OperatorError(f"--version names one processor's version; these jobs are of {', '.join(names)}")
    if not names:
        return None
    catalog = load_catalog(store)
    try:
        mode = catalog.for_new_job(names[0], version).mode
    except (KeyError, ValueError) as exc:
        raise OperatorError(f"--version {version}: {str(exc).strip(chr(39))}; nothing changed") from None
    if mode == "auto":  # the job keeps its mode (batch or realtime)
        if any(m == "handler" for _, m in held):
            raise OperatorError(f"{names[0]} {version} calls a model; handler jobs cannot move to it")
        return None
    return mode
