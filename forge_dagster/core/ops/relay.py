"""The outbox relay: delivers what transitions wrote to the outbox, at least once, in order per key.

Two lanes, each one short transaction per round:
- stamps (`job.stamp`): one signed POST per row to the job's callback_url, the row id as idempotency key,
  only where the callback policy allows (core/ops/callback_policy.py; a refused row ends `refused` for good),
  sent in parallel with a bound per host (core/ops/stamp_delivery.py);
- notifications (every other topic): all rows the lane may send now become one Slack message, so a
  storm of events is grouped instead of flooding the channel.
Rows are read only below the snapshot's xmin (a late commit is read later, never skipped) and only as
runs of consecutive rows per key (order per key). A failed delivery keeps its last error and is due
again after an exponential backoff; the rows after it on the same key wait for it. Nothing is sent for
a transition that rolled back: its rows never existed.

The `outbox_relay_sensor` drains it from Dagster; `forge work` runs it beside the claim loop.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

from forge_dagster.core.config import ForgeSettings, load_settings
from forge_dagster.core.ops.callback_policy import CallbackPolicy, Resolver, system_resolver
from forge_dagster.core.ops.notify import SlackNotifier, webhook_url
from forge_dagster.core.ops.stamp_delivery import DELIVERED, FAILED, REFUSED, StampLane
from forge_dagster.core.ops.stamps import STAMP_TOPIC, DeliveryError, StampSender, callback_secret_of
from forge_dagster.core.store import ForgeStore
from forge_dagster.core.store.outbox_store import ReadyRow

log = logging.getLogger(__name__)

STAMP_TOPICS = (STAMP_TOPIC,)


@dataclass
class RelayReport:
    delivered: int = 0
    failed: int = 0
    refused: int = 0  # stamps the callback policy refused: closed for good
    messages: int = 0  # Slack messages posted
    held: int = 0  # notification rows waiting because no webhook is configured
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, other: RelayReport) -> None:
        self.delivered += other.delivered
        self.failed += other.failed
        self.refused += other.refused
        self.messages += other.messages
        self.held = other.held or self.held
        self.errors += [e for e in other.errors if e not in self.errors]
        self.notes += [n for n in other.notes if n not in self.notes]

    def summary(self) -> str:
        text = f"delivered {self.delivered} outbox rows ({self.messages} Slack messages), {self.failed} failed"
        if self.refused:
            text += f", {self.refused} stamps refused by the callback policy"
        if self.held:
            text += f"; {self.held} notifications held"
        return "; ".join([text, *self.notes, *self.errors[:3]])


def retry_delay(attempts: int, *, base_s: float = 2.0, cap_s: float = 900.0) -> float:
    """Backoff before the next try of a row that has failed `attempts` times so far (now failed again)."""
    return min(cap_s, base_s * 2 ** min(attempts, 20)) * random.uniform(0.5, 1.0)


class Relay:
    """Drains the outbox of one store to its receivers."""

    def __init__(
        self, store: ForgeStore, *, stamps: StampSender, notifier: SlackNotifier | None,
        notifier_note: str = "", stamp_batch: int = 20, notify_batch: int = 500, base_delay_s: float = 2.0,
        max_delay_s: float = 900.0, lane_budget_s: float = 15.0, host_concurrency: int = 4, host_rate: float = 50.0,
    ) -> None:
        self.store, self.stamps, self.notifier = store, stamps, notifier
        self.stamp_lane = StampLane(stamps.send, concurrency=host_concurrency, rate=host_rate)
        self.notifier_note = notifier_note
        self.stamp_batch, self.notify_batch = stamp_batch, notify_batch
        self.base_delay_s, self.max_delay_s, self.lane_budget_s = base_delay_s, max_delay_s, lane_budget_s

    def describe(self) -> str:
        """One line for the operator: where notifications go (never the webhook's token)."""
        where = f"Slack webhook at {self.notifier.host} ({self.notifier_note})" if self.notifier else self.notifier_note
        return (f"forge: outbox relay on; notifications -> {where}; stamps -> each job's callback_url, signed, "
                f"to {self.stamps.policy.describe()} (FORGE_CALLBACK_ALLOW)")

    def close(self) -> None:
        self.stamp_lane.close()
        self.stamps.close()
        if self.notifier is not None:
            self.notifier.close()

    def _delay(self, row: ReadyRow, error: DeliveryError) -> float:
        if error.retry_after_s:
            return min(self.max_delay_s, error.retry_after_s)
        return retry_delay(row.attempts, base_s=self.base_delay_s, cap_s=self.max_delay_s)

    # -- lanes -----------------------------------------------------------------------------------
    def deliver_stamps(self) -> RelayReport:
        """One round of the stamp lane (one transaction): the rows sent in parallel, bounded per host."""
        report = RelayReport()
        outbox = self.store.outbox
        with self.store.transaction() as conn:
            rows = outbox.fetch_ready(conn, STAMP_TOPICS, include=True, limit=self.stamp_batch)
            outcomes = self.stamp_lane.send(rows, budget_s=self.lane_budget_s) if rows else []
            for outcome in outcomes:
                if outcome.kind == FAILED:
                    outbox.mark_attempt_failed(conn, outcome.row.id, str(outcome.error),
                                            self._delay(outcome.row, outcome.error))
                    report.failed += 1
                    report.errors.append(str(outcome.error))
            refused = [(o.row.id, str(o.error)) for o in outcomes if o.kind == REFUSED]
            outbox.mark_refused(conn, refused)
            delivered = [o.row.id for o in outcomes if o.kind == DELIVERED]
            outbox.mark_delivered(conn, delivered)
        report.delivered, report.refused = len(delivered), len(refused)
        report.errors += [reason for _, reason in refused[:3]]
        if refused:
            log.warning("outbox relay: %d stamps refused by the callback policy, e.g. %s", len(refused), refused[0][1])
        return report

    def deliver_notifications(self) -> RelayReport:
        """One round of the notification lane: every row it may send now, as one Slack message."""
        report = RelayReport()
        outbox = self.store.outbox
        if self.notifier is None:
            report.held = outbox.count_held(STAMP_TOPICS, include=False)
            if report.held:
                report.notes.append(f"notifications not sent: no Slack webhook ({self.notifier_note})")
            return report
        with self.store.transaction() as conn:
            rows = outbox.fetch_ready(conn, STAMP_TOPICS, include=False, limit=self.notify_batch)
            if not rows:
                return report
            try:
                self.notifier.send(rows)
            except DeliveryError as exc:
                # The first row of each key takes the failure and the backoff; the rest wait behind it.
                for row in rows:
                    if row.prev_id is None:
                        outbox.mark_attempt_failed(conn, row.id, str(exc), self._delay(row, exc))
                report.failed = len(rows)
                report.errors.append(str(exc))
                return report
            outbox.mark_delivered(conn, [r.id for r in rows])
        report.delivered, report.messages = len(rows), 1
        return report

    def drain(self, *, max_rounds: int = 100, deadline_s: float = 30.0) -> RelayReport:
        """Run both lanes until nothing more is deliverable now (or the deadline): failed rows wait
        for their backoff, so a round that delivers (or refuses) nothing ends the drain."""
        total = RelayReport()
        deadline = time.monotonic() + deadline_s
        for _ in range(max_rounds):
            round_report = RelayReport()
            round_report.add(self.deliver_stamps())
            round_report.add(self.deliver_notifications())
            total.add(round_report)
            if not (round_report.delivered or round_report.refused) or time.monotonic() > deadline:
                break
        return total


    def drain_at_exit(self, *, wait_s: float = 10.0) -> RelayReport:
        """A last drain before the process stops: first wait (up to `wait_s`) for the transactions running
        now to end, since an outbox row committed by one of them is not readable until then."""
        outbox = self.store.outbox
        horizon = outbox.horizon()
        deadline = time.monotonic() + wait_s
        while not outbox.passed(horizon) and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.drain()


def build_relay(
    store: ForgeStore, *, forge_home: Path, environ: Mapping[str, str] | None = None,
    settings: ForgeSettings | None = None, slack_webhook_url: str | None = None, callback_secret: str | None = None,
    resolver: Resolver = system_resolver, **kwargs,
) -> Relay:
    """A relay configured from `settings` (default: those of the environment, or of `environ` alone), or the
    values given: webhook, callback secret, and the callback policy with its per-host bounds (`FORGE_CALLBACK_*`). The Slack webhook is the operator's own
    and is not under the callback policy; a job's callback_url always is."""
    settings = settings.model_copy() if settings is not None else load_settings(environ)
    if slack_webhook_url:
        settings.slack_webhook_url = SecretStr(slack_webhook_url)
    if callback_secret:
        settings.callback_secret = SecretStr(callback_secret)
    url, source = webhook_url(settings)
    notifier = SlackNotifier(url) if url else None
    policy = CallbackPolicy.parse(settings.callback_allow, https_only=settings.callback_https_only)
    stamps = StampSender(callback_secret_of(settings, forge_home), policy=policy, resolver=resolver)
    kwargs = {"host_concurrency": settings.callback_host_concurrency, "host_rate": settings.callback_host_rate,
              **kwargs}
    return Relay(store, stamps=stamps, notifier=notifier, notifier_note=source, **kwargs)


@contextmanager
def background_relay(relay: Relay, *, interval_s: float = 5.0) -> Iterator[Relay]:
    """Drain every `interval_s` on a thread while the block runs, and once more at its end."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            try:
                report = relay.drain(deadline_s=interval_s * 2)
                if report.delivered or report.failed:
                    log.info("outbox relay: %s", report.summary())
            except Exception:  # the database may be restarting; the next round tries again
                log.warning("outbox relay round failed", exc_info=True)

    thread = threading.Thread(target=loop, name="forge-outbox-relay", daemon=True)
    thread.start()
    try:
        yield relay
    finally:
        stop.set()
        thread.join(timeout=interval_s * 3)
        try:
            report = relay.drain_at_exit()
            if report.delivered or report.failed or report.held:
                log.warning("outbox relay: %s", report.summary())
        finally:
            relay.close()
