"""Prometheus metrics for Forge, read from the store at each scrape.

Workers, sensors and runs live in many processes; the store is where all of their work is recorded,
so the collector derives every metric from it (hot and archived rows together, counters from the
append-only audit and ledgers) and any one `forge metrics` process reports the whole installation.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from forge_dagster.core.models import JobState
from forge_dagster.core.store import ForgeStore

log = logging.getLogger(__name__)

TOKEN_KINDS = ("input", "cached_input", "output", "reasoning")


class StoreCollector(Collector):
    """Yields Forge's metric families from one snapshot of the store."""

    def __init__(self, store: ForgeStore) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        up = GaugeMetricFamily("forge_store_up", "1 when the store answered this scrape, else 0")
        try:
            snap = self.store.operations.metrics_snapshot()
        except Exception as exc:  # a scrape must answer even when PostgreSQL does not
            log.warning("metrics: store unavailable: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up

        jobs = GaugeMetricFamily("forge_jobs", "Jobs by state (hot and archived)", labels=["state"])
        for state in JobState:
            jobs.add_metric([str(state)], snap.jobs_by_state.get(str(state), 0))
        yield jobs

        yield CounterMetricFamily("forge_job_claims", "Claims of jobs (every attempt, incl. reclaims)",
                                  value=snap.claims)
        takeovers = CounterMetricFamily("forge_lease_takeovers", "Expired leases taken over", labels=["how"])
        takeovers.add_metric(["reclaimed_by_claim"], snap.reclaims)
        takeovers.add_metric(["swept"], snap.swept)
        yield takeovers

        calls = CounterMetricFamily("forge_provider_results",
                                    "Provider result lines by class of outcome (ok, requeue, or the error class)",
                                    labels=["provider", "outcome"])
        for (provider, outcome), n in sorted(snap.provider_outcomes.items()):
            calls.add_metric([provider, outcome], n)
        yield calls
        realtime = CounterMetricFamily("forge_provider_calls",
                                       "Realtime provider calls by class of outcome (ok, rate_limited, "
                                       "quota_exhausted, transient, invalid_request, auth)",
                                       labels=["provider", "outcome"])
        for (provider, outcome), n in sorted(snap.provider_calls.items()):
            realtime.add_metric([provider, outcome], n)
        yield realtime

        tokens = CounterMetricFamily("forge_tokens", "Tokens billed", labels=["provider", "model", "kind"])
        cost = CounterMetricFamily("forge_cost_usd", "Cost booked in USD", labels=["provider", "model"])
        for row in snap.usage:
            for kind in TOKEN_KINDS:
                tokens.add_metric([row["provider"], row["model"], kind], row[kind])
            cost.add_metric([row["provider"], row["model"]], row["cost_usd"])
        yield tokens
        yield cost

        yield GaugeMetricFamily("forge_outbox_undelivered", "Outbox rows not yet delivered",
                                value=snap.outbox_undelivered)
        yield GaugeMetricFamily("forge_outbox_lag_seconds", "Age of the oldest undelivered outbox row",
                                value=snap.outbox_lag_s)
        yield GaugeMetricFamily("forge_outbox_retrying", "Undelivered outbox rows that failed at least once",
                                value=snap.outbox_retrying)
        yield CounterMetricFamily("forge_outbox_delivered", "Outbox rows delivered", value=snap.outbox_delivered)
        yield CounterMetricFamily("forge_callbacks_refused",
                                  "Stamps not sent: the callback policy refused their destination (for good)",
                                  value=snap.callbacks_refused)

        batches = GaugeMetricFamily("forge_batches", "Provider batches by state", labels=["state"])
        for state, n in sorted(snap.batches_by_state.items()):
            batches.add_metric([state], n)
        yield batches
        age = GaugeMetricFamily("forge_batch_oldest_open_age_seconds",
                                "Age of the oldest batch not yet collected", labels=["provider"])
        for provider, seconds in sorted(snap.oldest_open_batch_s.items()):
            age.add_metric([provider], seconds)
        yield age


def build_registry(store: ForgeStore) -> CollectorRegistry:
    """A registry holding only Forge's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store))
    return registry


def render(store: ForgeStore) -> bytes:
    """The metrics in Prometheus' text format (what a scrape returns)."""
    return generate_latest(build_registry(store))


def serve(store: ForgeStore, *, port: int, host: str = "127.0.0.1"):
    """Serve /metrics on host:port in a background thread; returns (server, thread)."""
    return start_http_server(port, addr=host, registry=build_registry(store))
