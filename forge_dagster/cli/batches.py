"""`forge batches list | show ID | cancel ID | prune`: provider batches from the command line.

An ID is Forge's batch id (a number), its forge batch id (fb_...) or the provider's batch id. A request
that cannot be carried out (an unknown batch, a cancel of one that already ended) says why, changes
nothing and exits with status 2.
"""

from __future__ import annotations

import argparse
import json

from forge_dagster.cli.common import fail, open_announced, table

THEN_HELP = ("what happens to the jobs the provider did not finish: requeue (back to pending, their attempt "
             "given back; the default) or cancel (they end cancelled)")


def _list(store, args) -> int:
    from forge_dagster.core.batch.inspection import list_batches

    rows = list_batches(store, states=args.state or None, provider=args.provider, limit=args.limit)
    if args.json:
        print(json.dumps(rows))
        return 0
    print(table([{"id": r["id"], "provider": r["provider"], "model": r["model"], "processor": r["processor"],
                  "state": r["state"], "age": _age(r["age_s"]), "requests": r["request_count"],
                  "jobs": " ".join(f"{k}={v}" for k, v in sorted(r["jobs"].items())) or "-",
                  "cost_usd": f"{r['cost_usd']:.6f}", "provider_batch_id": r["provider_batch_id"]}
                 for r in rows]))
    return 0


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _show(store, args) -> int:
    from forge_dagster.core.batch.inspection import batch_detail

    detail = batch_detail(store, args.id)
    if args.json:
        print(json.dumps(detail))
        return 0
    b = detail["batch"]
    print(f"batch {b['id']} ({b['forge_batch_id']}): {b['provider']} {b['model']}, {b['processor']} "
          f"{b['processor_version']}, {b['state']}{' (archived)' if b['archived'] else ''}")
    print(f"provider batch {b['provider_batch_id'] or '-'}, input file {detail['files']['input_file_id'] or '-'}, "
          f"{b['request_count']} requests, {b['bytes']} bytes, cost ${detail['cost_usd']:.6f}")
    if b["last_error"]:
        print(f"last error: {b['last_error']}")
    print("\nhistory:")
    print(table([{"at": h["at"], "state": h["state"], "detail": h.get("detail") or
                  (f"{h['actor']}: {h['reason']} (then {h['then']}, {h['changed']} jobs)" if "actor" in h else "")}
                 for h in detail["history"]]))
    print("\nprovider counts: " + (" ".join(f"{k}={v}" for k, v in detail["provider_counts"].items()) or "-"))
    print("stored answers: " + (" ".join(f"{k}={v}" for k, v in detail["results"].items()) or "-"))
    print("jobs by state now: " + (" ".join(f"{k}={v}" for k, v in detail["jobs"].items()) or "-"))
    return 0


def _cancel(store, args) -> int:
    from forge_dagster.core.batch.cancel import cancel_batch
    from forge_dagster.core.platform.registry import load_catalog
    from forge_dagster.core.providers.keyring import KeyRing
    from forge_dagster.core.providers.quota import KeyPorts

    ports = KeyPorts(KeyRing.from_env())  # the simulator (FORGE_SIMULATOR_URL) when no key is set
    report = cancel_batch(store, load_catalog(store), ports, args.id, then=args.then, reason=args.reason,
                          wait_s=args.wait)
    if args.json:
        print(json.dumps(report.as_dict()))
    elif not report.ended:
        print(f"asked {report.provider} to cancel batch {report.batch_id} ({report.provider_batch_id}); it was "
              f"still {report.provider_state} after {args.wait:.0f} s: the pipeline collects it when it ends "
              f"(recorded as operator action {report.action_id})")
    else:
        moved = ", ".join(f"{n} {state}" for state, n in report.by_state().items()) or "no job moved"
        print(f"batch {report.batch_id} ({report.provider_batch_id}) cancelled at {report.provider}: "
              f"{report.provider_state}; {moved} (then {report.then}); cost ${report.cost_usd:.6f}; "
              f"recorded as operator action {report.action_id}")
        for job_id, why in report.skipped:
            print(f"  job {job_id} skipped: {why}")
    return 0 if report.ended else 1


def _prune(store, args) -> int:
    from forge_dagster.core.batch.provider_storage import prune_provider_storage, results_at_risk
    from forge_dagster.core.providers.registry import ProviderRegistry
    from forge_dagster.resources.provider_keys import ProviderKeysResource

    ports = ProviderRegistry.from_env() or ProviderKeysResource().ports  # no key: FORGE_SIMULATOR_URL's
    report = prune_provider_storage(store, ports, older_than_days=args.older_than)
    at_risk = results_at_risk(store, args.warn_days)
    if args.json:
        print(json.dumps({"released": report.released, "unused_uploads": report.unused_uploads,
                          "forgotten": report.forgotten, "errors": report.errors,
                          "results_at_risk": [r["id"] for r in at_risk]}, default=str))
    else:
        files = sum(len(v) for v in report.released.values())
        print(f"OpenAI: {files} files of {len(report.released)} collected batches deleted, "
              f"{len(report.unused_uploads)} unused uploads deleted; Anthropic: {len(report.forgotten)} collected "
              f"batches older than {args.older_than:g} days deleted")
        for row in at_risk:
            print(f"batch {row['id']} ({row['provider_batch_id']}) is not collected and its results are "
                  f"deleted by Anthropic at {row['results_deleted_at']}")
        for problem in report.errors:
            print(f"not done: {problem}")
    return 1 if report.errors else 0


def cmd_batches(args: argparse.Namespace) -> int:
    from forge_dagster.core.models import ProviderError
    from forge_dagster.core.ops.operator import OperatorError

    actions = {"list": _list, "show": _show, "cancel": _cancel, "prune": _prune}
    store = open_announced()
    with store:
        try:
            return actions[args.action](store, args)
        except OperatorError as exc:
            return fail(str(exc), 2)
        except ProviderError as exc:  # after the provider ended the batch: the pipeline collects it as usual
            return fail(f"the provider failed while the batch was harvested ({exc}); the batch has ended and "
                        "the pipeline collects it")


def add_commands(sub) -> None:
    p = sub.add_parser("batches", help="provider batches: list, show one, cancel one, prune provider storage")
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("list", help="batches newest first: age, requests, jobs by state, cost")
    a.add_argument("--state", action="append", help="only batches in this state (repeatable)")
    a.add_argument("--provider", choices=["openai", "anthropic"])
    a.add_argument("--limit", type=int, default=50)
    a.add_argument("--json", action="store_true")
    a = actions.add_parser("show", help="one batch: history, counts, its jobs by state, files, cost")
    a.add_argument("id", help="Forge's batch id, its forge batch id (fb_...) or the provider's batch id")
    a.add_argument("--json", action="store_true")
    a = actions.add_parser("cancel", help="ask the provider to cancel, harvest what finished, settle the rest")
    a.add_argument("id", help="Forge's batch id, its forge batch id (fb_...) or the provider's batch id")
    a.add_argument("--then", choices=["requeue", "cancel"], default="requeue", help=THEN_HELP)
    a.add_argument("--reason", required=True, help="why: recorded with the action and every job it settles")
    a.add_argument("--wait", type=float, default=120.0,
                   help="seconds to wait for the provider to end the batch (default 120)")
    a.add_argument("--json", action="store_true")
    a = actions.add_parser("prune", help="delete provider-side objects Forge no longer needs: OpenAI files of "
                                         "collected batches and unused uploads, old collected Anthropic batches")
    a.add_argument("--older-than", type=float, default=7.0,
                   help="delete collected Anthropic batches older than this many days (default 7)")
    a.add_argument("--warn-days", type=float, default=3.0,
                   help="list uncollected Anthropic batches whose results go within this many days (default 3)")
    a.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_batches)
