"""Notifications to a Slack incoming webhook, in Block Kit, grouped so a storm is one message.

The relay hands over every notification row it may send at once (in order per key); they become one
message: a single event is shown in full, several are grouped by topic with counts and a few samples.
Topics: `batch.ended`, `jobs.invalid_or_dead`, `key.paused`, `key.resumed`, `provider.all_keys_paused`,
`provider.keys_available`, `briefing.ready`, the nightly chain's `nightly.run_failed` and `nightly.gpu_wait`,
and `healing.exhausted`; any other topic is shown generically.

The webhook is `FORGE_SLACK_WEBHOOK_URL`, else the simulator's receiver (`FORGE_SIMULATOR_URL` +
`/slack/webhook`); with neither, nothing is sent and the relay says so. A webhook URL holds a token:
it is never printed, only its host.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from forge_dagster.core.config import ForgeSettings
from forge_dagster.core.ops.stamps import DeliveryError
from forge_dagster.core.secrets import scrub
from forge_dagster.core.store.types import OutboxMessage, OutboxRow

MAX_BLOCKS = 50  # Slack's limit per message
MAX_TEXT = 2900  # a section's text is limited to 3000 characters
SAMPLES = 5


def webhook_url(settings: ForgeSettings) -> tuple[str | None, str]:
    """(the webhook URL or None, where it comes from, for the operator)."""
    if settings.slack_webhook_url and settings.slack_webhook_url.get_secret_value():
        return settings.slack_webhook_url.get_secret_value(), "FORGE_SLACK_WEBHOOK_URL"
    if settings.simulator_url:
        return settings.simulator_url.rstrip("/") + "/slack/webhook", "the simulator's Slack receiver"
    return None, "none: set FORGE_SLACK_WEBHOOK_URL (notifications are held in the outbox)"


def _money(value: Any) -> str:
    return f"${float(value or 0):,.4f}"


def _duration(seconds: Any) -> str:
    s = int(float(seconds or 0))
    return f"{s // 3600}h {s % 3600 // 60}m" if s >= 3600 else f"{s // 60}m {s % 60}s"


def _counts(counts: Mapping[str, Any]) -> str:
    return ", ".join(f"{n} {state}" for state, n in counts.items() if n) or "no jobs changed"


def _key_name(p: Mapping[str, Any]) -> str:
    return f"{p.get('provider', '?')} key `{p.get('alias') or p.get('key') or '?'}`"


def _more(lines: list[str], total: int) -> list[str]:
    return lines + ([f"_… and {total - len(lines)} more_"] if total > len(lines) else [])


# Each renderer turns the payloads of one topic into (title, lines).
def _batch_ended(ps: Sequence[Mapping[str, Any]]) -> tuple[str, list[str]]:
    def line(p: Mapping[str, Any]) -> str:
        what = " ".join(str(p.get(k)) for k in ("provider", "model", "processor") if p.get(k))
        return (f"`b{p.get('batch_id')}` {what}: {p.get('state', 'ended')}, {_counts(p.get('counts', {}))}, "
                f"{_money(p.get('cost_usd'))}, {_duration(p.get('duration_s'))}")

    if len(ps) == 1:
        return f"Batch b{ps[0].get('batch_id')} ended", [line(ps[0])]
    totals: dict[str, int] = defaultdict(int)
    for p in ps:
        for state, n in (p.get("counts") or {}).items():
            totals[state] += int(n or 0)
    cost = sum(float(p.get("cost_usd") or 0) for p in ps)
    longest = max(float(p.get("duration_s") or 0) for p in ps)
    head = f"*{len(ps)} batches ended*: {_counts(totals)}; {_money(cost)}; longest {_duration(longest)}"
    return f"{len(ps)} batches ended", _more([head] + [line(p) for p in ps[:SAMPLES]], len(ps) + 1)


def _origins(ps: Sequence[Mapping[str, Any]]) -> str:
    """Where rejected jobs came from: "batch b4", "3 batches", "realtime ticket_triage", "the lease sweep"."""
    batches = sorted({p["batch_id"] for p in ps if p.get("batch_id") is not None})
    realtime = sorted({str(p.get("processor")) for p in ps if p.get("source") == "realtime"})
    parts = ([f"batch b{batches[0]}"] if len(batches) == 1 else [f"{len(batches)} batches"] if batches else [])
    parts += [f"realtime {', '.join(realtime)}"] if realtime else []
    parts += ["the lease sweep"] if any(p.get("source") == "sweep" for p in ps) else []
    parts += ["forge work"] if any(p.get("source") == "worker" for p in ps) else []
    return " and ".join(parts) or "unknown work"


def _invalid_or_dead(ps: Sequence[Mapping[str, Any]]) -> tuple[str, list[str]]:
    invalid = sum(int(p.get("invalid") or 0) for p in ps)
    dead = sum(int(p.get("dead") or 0) for p in ps)
    samples = [s for p in ps for s in p.get("samples") or []]
    lines = [f"*{invalid} invalid, {dead} dead* from {_origins(ps)}"]
    lines += [f"job {s.get('job')} ({s.get('state')}): {s.get('reason')}" for s in samples[:SAMPLES]]
    return f"Jobs turned invalid or dead: {invalid + dead}", _more(lines, len(samples) + 1)


def _key_events(verb: str) -> Callable[[Sequence[Mapping[str, Any]]], tuple[str, list[str]]]:
    def render(ps: Sequence[Mapping[str, Any]]) -> tuple[str, list[str]]:
        per_key: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for p in ps:
            per_key[_key_name(p)].append(p)
        lines = []
        for name, events in per_key.items():
            last = events[-1]
            detail = last.get("reason") or ""
            if last.get("next_probe_at"):
                detail += f" (next probe {last['next_probe_at']})"
            times = f" {len(events)}×" if len(events) > 1 else ""
            lines.append(f"{name} {verb}{times}" + (f": {detail}" if detail else ""))
        title = f"Provider key {verb}" if len(ps) == 1 else f"Provider keys {verb}: {len(ps)} events"
        return title, lines

    return render


def _all_keys_paused(ps: Sequence[Mapping[str, Any]]) -> tuple[str, list[str]]:
    providers = sorted({str(p.get("provider")) for p in ps})
    lines = [f":rotating_light: {p.get('message') or 'every key of ' + str(p.get('provider')) + ' is paused'}"
             + (f" — {p['reason']}" if p.get("reason") else "") for p in ps]
    return f"All keys paused: {', '.join(providers)}", lines


def _keys_available(ps: Sequence[Mapping[str, Any]]) -> tuple[str, list[str]]:
    return "Provider back in service", [f"{p.get('provider')}: key `{p.get('alias')}` answers again" for p in ps]


def _briefing(ps: Sequence[Mapping[str, Any]]) -> tuple[str, list[str]]:
    p = ps[-1]
    title = p.get("title") or f"Nightly briefing {p.get('date') or p.get('day') or ''}".strip()
    body = p.get("summary") or p.get("markdown") or p.get("text") or p.get("body") or ""
    lines = [str(body)] if body else []
    if p.get("url") or p.get("path"):
        lines.append(f"Full briefing: {p.get('url') or p.get('path')}")
    return str(title), lines or ["(empty briefing)"]


def _notices(one: str, many: str) -> Callable[[Sequence[Mapping[str, Any]]], tuple[str, list[str]]]:
    """Notices that carry their own sentence (`text`): the nightly chain's failures and waits, healing."""

    def render(ps: Sequence[Mapping[str, Any]]) -> tuple[str, list[str]]:
        lines = [str(p.get("text") or json.dumps(p, default=str)[:300]) for p in ps[:SAMPLES]]
        title = str(ps[0].get("title") or one) if len(ps) == 1 else f"{many}: {len(ps)}"
        return title, _more(lines, len(ps))

    return render


def _generic(topic: str) -> Callable[[Sequence[Mapping[str, Any]]], tuple[str, list[str]]]:
    def render(ps: Sequence[Mapping[str, Any]]) -> tuple[str, list[str]]:
        lines = [f"`{json.dumps(p, default=str)[:300]}`" for p in ps[:3]]
        return f"{topic} ({len(ps)})", _more(lines, len(ps))

    return render


RENDERERS: dict[str, Callable[[Sequence[Mapping[str, Any]]], tuple[str, list[str]]]] = {
    "batch.ended": _batch_ended,
    "jobs.invalid_or_dead": _invalid_or_dead,
    "key.paused": _key_events("paused"),
    "key.resumed": _key_events("resumed"),
    "provider.all_keys_paused": _all_keys_paused,
    "provider.keys_available": _keys_available,
    "briefing.ready": _briefing,
    "nightly.run_failed": _notices("Nightly run failed", "Nightly runs failed"),
    "nightly.gpu_wait": _notices("Nightly GPU wait", "Nightly GPU waits"),
    "healing.exhausted": _notices("Self-healing gave up", "Self-healing gave up"),
}
URGENT = ("provider.all_keys_paused", "key.paused", "jobs.invalid_or_dead", "nightly.run_failed",
          "healing.exhausted")  # shown first


def _section(text: str) -> dict[str, Any]:
    text = scrub(text)
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:MAX_TEXT]}}


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": scrub(text)[:150], "emoji": True}}


def render_message(rows: Sequence[OutboxRow]) -> dict[str, Any]:
    """One Slack message (Block Kit, with a `text` fallback) for `rows`, grouped by topic."""
    by_topic: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        by_topic[row.topic].append(row.payload or {})
    topics = sorted(by_topic, key=lambda t: (t not in URGENT, URGENT.index(t) if t in URGENT else 0, t))
    rendered = [(RENDERERS.get(t) or _generic(t))(by_topic[t]) for t in topics]
    blocks: list[dict[str, Any]] = []
    if len(rendered) == 1:
        title, lines = rendered[0]
        blocks += [_header(f"Forge: {title}"), _section("\n".join(lines))]
    else:
        blocks.append(_header(f"Forge: {len(rows)} events"))
        for title, lines in rendered[: (MAX_BLOCKS - 3) // 2]:
            blocks += [_section(f"*{title}*\n" + "\n".join(lines)), {"type": "divider"}]
        if len(rendered) > (MAX_BLOCKS - 3) // 2:
            blocks.append(_section(f"_… and {len(rendered) - (MAX_BLOCKS - 3) // 2} more kinds of event_"))
    ids = [r.id for r in rows]
    span = f"#{ids[0]}" if len(ids) == 1 else f"#{min(ids)}–#{max(ids)} ({len(ids)})"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"forge outbox {span}"}]})
    fallback = "; ".join(title for title, _ in rendered)
    return {"text": scrub(f"Forge: {fallback}")[:MAX_TEXT], "blocks": blocks[:MAX_BLOCKS]}


class SlackNotifier:
    """Posts messages to one incoming webhook."""

    def __init__(self, url: str, *, timeout_s: float = 10.0, client: httpx.Client | None = None) -> None:
        self._url = url
        self.host = httpx.URL(url).netloc.decode()
        self._client = client or httpx.Client(timeout=timeout_s, headers={"User-Agent": "forge-notify/1"})

    def close(self) -> None:
        self._client.close()

    def send(self, rows: Sequence[OutboxRow]) -> dict[str, Any]:
        """Render and post `rows` as one message; raises DeliveryError unless Slack answered 2xx."""
        message = render_message(rows)
        ids = ",".join(str(r.id) for r in rows)
        try:
            response = self._client.post(self._url, json=message, headers={"X-Forge-Outbox-Ids": ids})
        except httpx.HTTPError as exc:
            raise DeliveryError(f"slack webhook at {self.host}: {type(exc).__name__}", host=self.host) from exc
        if not 200 <= response.status_code < 300:
            retry = response.headers.get("retry-after")
            raise DeliveryError(f"slack webhook at {self.host}: HTTP {response.status_code} {response.text[:200]}",
                                retry_after_s=float(retry) if retry and retry.isdigit() else None)
        return message


def batch_messages(batch: Mapping[str, Any], settlements: Sequence[Any], states: Mapping[int, str]) -> list:
    """The outbox rows for a batch whose jobs were just settled (`states`: job id -> new state):
    `batch.ended` with counts, cost and duration, and `jobs.invalid_or_dead` with a sample of reasons.
    Written by the caller in the settling transaction; nothing when no job changed."""
    if not states:
        return []
    counts: dict[str, int] = defaultdict(int)
    for state in states.values():
        counts["requeued" if state == "pending" else state] += 1
    cost = sum(float(s.cost_usd or 0) for s in settlements if s.job_id in states)
    started = batch.get("submitted_at") or batch.get("created_at")
    duration = (datetime.now(UTC) - started).total_seconds() if started else 0.0
    key = f"batch:{batch['id']}"
    common = {"batch_id": batch["id"], "provider": batch.get("provider"), "model": batch.get("model"),
              "processor": batch.get("processor")}
    messages = [OutboxMessage("batch.ended", key, {
        **common, "state": batch.get("state"), "counts": dict(counts), "cost_usd": round(cost, 8),
        "duration_s": round(duration, 1), "requests": batch.get("request_count")})]
    return messages + rejection_messages(batch, settlements, states)


def rejection_messages(batch: Mapping[str, Any], settlements: Sequence[Any], states: Mapping[int, str]) -> list:
    """The `jobs.invalid_or_dead` row for the jobs of `batch` that settling turned invalid or dead (none when
    no job did), for every path that settles a batch's jobs: validation, a refused submission, a failed batch."""
    common = {"batch_id": batch["id"], "provider": batch.get("provider"), "model": batch.get("model"),
              "processor": batch.get("processor"), "source": "batch"}
    rejected = [(s.job_id, states[s.job_id], s.reason) for s in settlements if s.job_id in states]
    return invalid_or_dead_messages(f"batch:{batch['id']}", common, rejected)


def invalid_or_dead_messages(key: str, common: Mapping[str, Any],
                             jobs: Sequence[tuple[int, str, str | None]]) -> list:
    """The `jobs.invalid_or_dead` outbox row for jobs (id, new state, reason) that a transition just turned
    invalid or dead (others in `jobs` are ignored): counts and a sample of reasons; none when no job did.
    `common` says where they came from (`source`: batch, realtime or sweep, and batch_id / processor).
    Every path that turns jobs invalid or dead writes it in the transaction of that transition."""
    rejected = [(job_id, state, reason) for job_id, state, reason in jobs if state in ("invalid", "dead")]
    if not rejected:
        return []
    counts = {state: sum(1 for _, s, _ in rejected if s == state) for state in ("invalid", "dead")}
    return [OutboxMessage("jobs.invalid_or_dead", key, {
        **common, **counts,
        "samples": [{"job": job_id, "state": state, "reason": (reason or "")[:160]}
                    for job_id, state, reason in rejected[:SAMPLES]]})]


def sweep_notices(rows: Sequence[tuple[int, str, str]]) -> list[OutboxMessage]:
    """What a lease sweep tells: the jobs it turned dead (rows of job id, new state, reason)."""
    return invalid_or_dead_messages("sweep", {"source": "sweep"}, rows)
