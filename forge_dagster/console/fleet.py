"""The live fleet as the console shows it: `forge work` processes and Dagster runs by their heartbeats,
Dagster's daemons, lease takeovers, outbox lag, the last night, and a diagram of Forge's parts carrying
these numbers (inline SVG, drawn here: no script, no image files)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup, escape

from forge_dagster.core.store import ForgeStore
from forge_dagster.core.store.console_store import JobFilter

log = logging.getLogger(__name__)
DAEMON_STALE_S = 60.0


def daemon_heartbeats() -> dict[str, float] | None:
    """Dagster's daemons {type: age in seconds} from Dagster's instance, or None when it cannot be read."""
    try:
        import dagster as dg  # only the fleet page asks Dagster, and only when DAGSTER_HOME is set

        with dg.DagsterInstance.get() as instance:
            beats = instance.get_daemon_heartbeats()
    except Exception as exc:
        log.info("no Dagster instance for the fleet page: %s", exc)
        return None
    now = time.time()
    return {kind: now - beat.timestamp for kind, beat in beats.items()}


@dataclass
class Fleet:
    workers: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    daemons: dict[str, float] | None
    takeovers: dict[str, int]
    outbox_undelivered: int
    outbox_lag_s: float
    night: dict[str, Any] | None
    jobs: dict[str, int] = field(default_factory=dict)
    open_batches: int = 0

    @property
    def live_workers(self) -> list[dict[str, Any]]:
        return [w for w in self.workers if w["alive"]]

    @property
    def live_runs(self) -> list[dict[str, Any]]:
        return [r for r in self.runs if r["alive"]]

    @property
    def live_daemons(self) -> int:
        return sum(1 for age in (self.daemons or {}).values() if age < DAEMON_STALE_S)


def read_fleet(store: ForgeStore, *, with_dagster: bool = True) -> Fleet:
    undelivered, lag = store.outbox.lag()
    batches = store.console.batch_counts()
    return Fleet(workers=store.fleet.workers(), runs=store.fleet.runs(),
                 daemons=daemon_heartbeats() if with_dagster else None, takeovers=store.fleet.takeovers(),
                 outbox_undelivered=undelivered, outbox_lag_s=lag, night=store.console.latest_night(),
                 jobs=store.console.job_counts(JobFilter()).by_state,
                 open_batches=sum(n for s, n in batches.items() if s not in ("collected", "archived")))


# -- the diagram ---------------------------------------------------------------------------------
_BOX_W, _BOX_H = 190, 64


def _box(x: int, y: int, title: str, line: str, ok: bool | None = True, href: str | None = None) -> str:
    fill = {True: "#e8f5e9", False: "#ffebee", None: "#f5f5f5"}[ok]
    body = (f'<rect x="{x}" y="{y}" width="{_BOX_W}" height="{_BOX_H}" rx="8" fill="{fill}" stroke="#555"/>'
            f'<text x="{x + _BOX_W // 2}" y="{y + 24}" text-anchor="middle" font-weight="bold">{escape(title)}</text>'
            f'<text x="{x + _BOX_W // 2}" y="{y + 46}" text-anchor="middle" font-size="13">{escape(line)}</text>')
    return f'<a href="{escape(href)}">{body}</a>' if href else body


def _arrow(x1: int, y1: int, x2: int, y2: int) -> str:
    return f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="#777" stroke-width="2" marker-end="url(#arrow)"/>'


def diagram(fleet: Fleet) -> Markup:
    """Forge's parts (intake, Dagster, the store, workers, providers, the relay, the nightly chain) with
    the live numbers on them."""
    jobs = fleet.jobs
    open_jobs = sum(jobs.get(s, 0) for s in ("pending", "claimed", "running", "submitted", "collected"))
    leased = jobs.get("claimed", 0) + jobs.get("running", 0)
    daemons = ("daemons: unknown" if fleet.daemons is None else f"{fleet.live_daemons} daemons beating")
    night = fleet.night
    night_line = f"{night['night']}: {night['level']}" if night else "no night yet"
    parts = [
        _box(20, 20, "Intake", f"{jobs.get('pending', 0):,} pending", None, "/jobs?state=pending"),
        _box(20, 130, "Dagster", f"{daemons}, {len(fleet.live_runs)} runs",
             fleet.daemons is not None and fleet.live_daemons > 0),
        _box(290, 75, "PostgreSQL store", f"{open_jobs:,} open, {leased:,} leased", True, "/jobs"),
        _box(560, 20, "forge work", f"{len(fleet.live_workers)} alive", bool(fleet.live_workers) or None),
        _box(560, 130, "Provider batches", f"{fleet.open_batches} open", None, "/batches"),
        _box(290, 210, "Outbox relay", f"{fleet.outbox_undelivered} waiting, lag {fleet.outbox_lag_s:.0f}s",
             fleet.outbox_lag_s < 300),
        _box(20, 240, "Nightly chain", night_line, None if not night else night["level"] == "GREEN"),
        _box(560, 240, "Lease takeovers (1h)",
             f"{fleet.takeovers['reclaimed']} reclaimed, {fleet.takeovers['swept']} swept",
             fleet.takeovers["reclaimed"] + fleet.takeovers["swept"] == 0),
        _arrow(210, 52, 290, 100), _arrow(210, 162, 290, 120), _arrow(480, 100, 560, 52),
        _arrow(480, 120, 560, 162), _arrow(385, 139, 385, 210), _arrow(210, 262, 290, 150),
        _arrow(655, 194, 655, 240),
    ]
    svg = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 770 320" width="770" height="320" '
           'font-family="sans-serif" font-size="14" role="img" aria-label="Forge parts with live numbers">'
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#777"/></marker></defs>'
           + "".join(parts) + "</svg>")
    return Markup(svg)  # every text in it went through escape() above
