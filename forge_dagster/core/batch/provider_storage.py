"""What providers keep for Forge's batches, and when it goes.

OpenAI keeps a batch's input, output and error files (they count against the organisation's file quota):
they are deleted once every line of the batch is stored in `batch_results` and the batch was collected
`FORGE_PROVIDER_FILE_RETENTION_S` ago (default 0: at once), then the batch is marked released. The order
is delete, then record: a crash between the two leaves a batch that is released again (a file already gone
counts as deleted), and nothing Forge still needs is lost, for collection reads the stored lines, never the
files, once they are in. Output and error files also expire by themselves (`output_expires_after`).
Uploads Forge made that no batch was ever created from (a crash between upload and create) are swept after
a grace period. Anthropic deletes a batch's results 29 days after its creation: batches not collected
within `days` of that are reported (an asset check and a notification), and collected ones are deleted
from the provider by `forge batches prune`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from forge_dagster.core.config import load_settings
from forge_dagster.core.models import Provider, ProviderError
from forge_dagster.core.providers.base import ProviderPort
from forge_dagster.core.providers.quota import batch_port
from forge_dagster.core.store import ForgeStore

log = logging.getLogger(__name__)

UNUSED_UPLOAD_GRACE_S = 86_400.0  # an upload this old with no batch of ours created from it was never used
RESULTS_RETENTION_DAYS = 29  # Anthropic deletes a batch's results this long after its creation


@dataclass
class PruneReport:
    released: dict[int, list[str]] = field(default_factory=dict)  # batch id -> provider objects deleted
    unused_uploads: list[str] = field(default_factory=list)
    forgotten: list[int] = field(default_factory=list)  # Anthropic batches deleted at the provider
    errors: list[str] = field(default_factory=list)


def release_batch_files(store: ForgeStore, ports: Mapping[Provider, ProviderPort], *,
                        batch_id: int | None = None, retention_s: float | None = None,
                        report: PruneReport | None = None) -> PruneReport:
    """Delete the provider files of OpenAI batches whose lines are all stored (one batch, or every one due),
    and record each; a provider error leaves that batch for the next pass."""
    report = report or PruneReport()
    if Provider.OPENAI not in ports:
        return report
    retention = load_settings().provider_file_retention_s if retention_s is None else retention_s
    for batch in store.batches.to_release(Provider.OPENAI, retention_s=retention, batch_id=batch_id):
        try:
            deleted = batch_port(store, ports, batch).release_batch(batch["provider_batch_id"])
        except (ProviderError, KeyError) as exc:
            report.errors.append(f"batch {batch['id']}: files not deleted: {exc}")
            continue
        store.batches.mark_released(batch["id"])
        report.released[batch["id"]] = deleted
    return report


def sweep_unused_uploads(store: ForgeStore, ports: Mapping[Provider, ProviderPort], *,
                         grace_s: float = UNUSED_UPLOAD_GRACE_S, now: float | None = None,
                         report: PruneReport | None = None) -> PruneReport:
    """Delete batch input files Forge uploaded, older than `grace_s`, that no batch of Forge's was created
    from (a submission in progress has a younger upload, or a batch row that names it)."""
    report = report or PruneReport()
    port = ports.get(Provider.OPENAI)
    if port is None:
        return report
    cutoff = (time.time() if now is None else now) - grace_s
    try:
        uploads = [(file_id, created) for file_id, _, created in port.forge_uploads() if created <= cutoff]
        known = store.batches.known_input_files([f for f, _ in uploads]) if uploads else set()
        for file_id, _ in uploads:
            if file_id not in known and port.delete_file(file_id):
                report.unused_uploads.append(file_id)
    except ProviderError as exc:
        report.errors.append(f"unused uploads: {exc}")
    return report


def forget_collected_batches(store: ForgeStore, ports: Mapping[Provider, ProviderPort], *, older_than_days: float,
                             report: PruneReport | None = None) -> PruneReport:
    """Delete collected Anthropic batches older than `older_than_days` at the provider, and record each."""
    report = report or PruneReport()
    if Provider.ANTHROPIC not in ports:
        return report
    for batch in store.batches.to_forget(older_than_days):
        try:
            batch_port(store, ports, {**batch, "provider": Provider.ANTHROPIC}).forget_batch(batch["provider_batch_id"])
        except (ProviderError, KeyError) as exc:
            report.errors.append(f"batch {batch['id']}: not deleted at the provider: {exc}")
            continue
        store.batches.mark_forgotten(batch["id"])
        report.forgotten.append(batch["id"])
    return report


def prune_provider_storage(store: ForgeStore, ports: Mapping[Provider, ProviderPort], *,
                           older_than_days: float = 7.0) -> PruneReport:
    """Everything above in one pass: released files, unused uploads, old Anthropic batches."""
    report = release_batch_files(store, ports)
    sweep_unused_uploads(store, ports, report=report)
    return forget_collected_batches(store, ports, older_than_days=older_than_days, report=report)


def results_at_risk(store: ForgeStore, within_days: float = 3.0) -> list[dict[str, Any]]:
    """Anthropic batches not collected whose results the provider deletes within `within_days`."""
    return store.batches.results_at_risk(within_days)
