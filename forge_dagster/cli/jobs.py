"""`forge jobs list | show | retry | cancel`: an operator's view of the work and hands on it.

Ids are Forge job ids or intake ids (the id a job came in with). Retry and cancel need a reason, which is
recorded with every job they change; bad input changes nothing (core/ops/operator.py).
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any

from forge_dagster.cli.common import fail, open_announced, table
from forge_dagster.core.models import OPEN_JOB_STATES, RETRYABLE_JOB_STATES, JobState
from forge_dagster.core.time_filters import parse_since

CANCEL_STATES, RETRY_STATES = sorted(OPEN_JOB_STATES), sorted(RETRYABLE_JOB_STATES)
ALL_STATES = sorted(JobState)


def since_time(text: str | None) -> datetime | None:
    """`--since`, as core/ops/operator.parse_since reads it."""
    try:
        return parse_since(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _json(value: Any) -> str:
    return json.dumps(value, default=str, indent=2)


def cmd_list(args: argparse.Namespace) -> int:
    with open_announced() as store:
        batch_id = None
        if args.batch:
            found = store.operations.find_batch(int(args.batch)) if args.batch.isdigit() else None
            if found is None:
                return fail(f"no batch {args.batch!r} (give Forge's batch id: `forge batches list`)")
            batch_id = found["id"]
        rows = store.jobs.page(states=args.state, processor=args.processor, batch_id=batch_id,
                               since=args.since, before=args.before, limit=args.limit)
    if args.json:
        print(_json(rows))
        return 0
    print(table([{"id": r["id"], "intake id": r["external_id"], "processor": f"{r['processor']} {r['processor_version']}",
                  "mode": r["mode"], "state": r["state"], "attempt": f"{r['attempt']}/{r['max_attempts']}",
                  "batch": r["batch_id"], "created": str(r["created_at"])[:19], "reason": (r["reason"] or "")[:60]}
                 for r in rows]))
    if len(rows) == args.limit:
        print(f"(more: --before {rows[-1]['id']})")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from forge_dagster.core.ops.operator import OperatorError, job_story  # the registry: only actions pay it

    with open_announced() as store:
        try:
            story = job_story(store, args.id)
        except OperatorError as exc:
            return fail(str(exc))
    if args.json:
        print(_json(story))
        return 0
    job = story["job"]
    print(f"job {job['id']} ({job.get('external_id')}) from {job.get('source')}: {job['state']}"
          + (" [archived]" if job.get("archived") else ""))
    print(f"  processor {job['processor']} {job.get('processor_version')}, mode {job.get('mode')}, "
          f"attempt {job.get('attempt')}/{job.get('max_attempts')}, cost ${float(job.get('cost_usd') or 0):.6f}")
    print(f"  reason: {job.get('reason')}")
    if story["batch"]:
        b = story["batch"]
        print(f"  batch {b['id']} ({b.get('forge_batch_id')}, {b.get('provider')} {b.get('provider_batch_id')}): {b['state']}")
    for attempt, events in sorted(story["attempts"].items()):
        print(f"attempt {attempt}:")
        for e in events:
            print(f"  {str(e['at'])[:19]} {e['from_state'] or '-':>9} -> {e['to_state']:<9} by {e['actor']}: {e['reason'] or ''}")
    for name in ("results", "costs", "accepted"):
        if story[name]:
            print(f"{name}:")
            print(table([{k: v for k, v in r.items() if k != "raw"} for r in story[name]]))
    if job.get("errors"):
        print("validator and provider errors:\n" + _json(job["errors"]))
    if job.get("raw_output"):
        print(f"raw provider body (last attempt):\n{job['raw_output']}")
    if job.get("output") is not None:
        print("accepted output:\n" + _json(job["output"]))
    return 0


def _print_report(report, as_json: bool) -> None:
    if as_json:
        print(_json(report.as_dict()))
        return
    verb = {"retry": "retried", "cancel": "cancelled"}[report.action]
    print(f"{verb} {len(report.changed)} job(s)" + (f": {', '.join(map(str, sorted(report.changed)[:20]))}"
                                                   if report.changed else ""))
    for job_id, why in report.skipped:
        print(f"  left alone {job_id}: {why}")


def cmd_retry(args: argparse.Namespace) -> int:
    from forge_dagster.core.ops.operator import OperatorError, retry_jobs

    with open_announced() as store:
        try:
            report = retry_jobs(store, args.ids, states=args.state or (), processor=args.processor,
                                since=args.since, version=args.version, attempts=args.attempts, reason=args.reason)
        except OperatorError as exc:
            return fail(str(exc), 2)
    _print_report(report, args.json)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from forge_dagster.core.ops.operator import OperatorError, cancel_jobs

    with open_announced() as store:
        try:
            report = cancel_jobs(store, args.ids, states=args.state or (), processor=args.processor,
                                 since=args.since, reason=args.reason)
        except OperatorError as exc:
            return fail(str(exc), 2)
    _print_report(report, args.json)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    jobs = sub.add_parser("jobs", help="list, show, retry and cancel jobs").add_subparsers(dest="jobs_command",
                                                                                           required=True)
    p = jobs.add_parser("list", help="jobs, newest first (a page at a time)")
    p.add_argument("--state", action="append", choices=ALL_STATES, help="only jobs in this state (repeatable)")
    p.add_argument("--processor", help="only jobs of this processor")
    p.add_argument("--batch", help="only jobs of this batch (Forge's batch id)")
    p.add_argument("--since", type=since_time, help="created since: an ISO time or an age (30m, 6h, 2d)")
    p.add_argument("--before", type=int, help="the page after this job id (printed at the end of a page)")
    p.add_argument("--limit", type=int, default=50, help="jobs per page (default 50)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = jobs.add_parser("show", help="one job's story: state, attempts, events, provider bodies, errors, costs")
    p.add_argument("id", help="Forge job id or intake id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)

    p = jobs.add_parser("retry", help="send jobs that ended without success back with a fresh attempt budget")
    p.add_argument("ids", nargs="*", help="Forge job ids or intake ids (or select with --state)")
    p.add_argument("--state", action="append", choices=RETRY_STATES, help="retry every job in this state")
    p.add_argument("--processor", help="with --state: only jobs of this processor")
    p.add_argument("--since", type=since_time, help="with --state: only jobs created since")
    p.add_argument("--version", help="run them on this registered processor version")
    p.add_argument("--attempts", type=int, help="attempts to give each (default: the budget they came with)")
    p.add_argument("--reason", required=True, help="why: recorded with every job retried")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_retry)

    p = jobs.add_parser("cancel", help="end open jobs as cancelled (a late result is refused)")
    p.add_argument("ids", nargs="*", help="Forge job ids or intake ids (or select with --processor/--state)")
    p.add_argument("--processor", help="cancel the open jobs of this processor")
    p.add_argument("--state", action="append", choices=CANCEL_STATES, help="only jobs in this open state")
    p.add_argument("--since", type=since_time, help="only jobs created since")
    p.add_argument("--reason", required=True, help="why: recorded with every job cancelled")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_cancel)
