"""Intake in the store: routed jobs inserted with one COPY, and the review of rows other applications
inserted straight into jobs (none is claimable before it is reviewed).

Reached as `ForgeStore.intake`; it shares the store's connection pool. Routing happens before: the store
imports nothing from the engine (`core/intake/routing.submit_jobs` routes, then calls `enqueue`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from forge_dagster.core.models import EnqueueReport, JobSpec, Rejection, UnusableCallback
from forge_dagster.core.store import intake_sql, job_sql

# What PostgreSQL may still refuse in a row that passed JobSpec's checks (a constraint added later, say).
_ROW_ERRORS = (psycopg.DataError, psycopg.IntegrityError, psycopg.errors.RaiseException, UnicodeError)


class IntakeRepository:
    def __init__(self, pool, owner: str) -> None:
        self._pool, self.owner = pool, owner

    def enqueue(self, specs: Sequence[JobSpec | str], *, source: str = "api") -> EnqueueReport:
        """Enqueue routed jobs with one COPY (`core/intake/routing.submit_jobs` routes them first; a string in
        a spec's place is routing's reason to refuse it). A job that cannot be stored (no mode, a duplicate
        (source, external_id), a NUL character, a bad mode or max_attempts, a payload too big...) is
        rejected with its reason; the others still go in."""
        report, rows = EnqueueReport(), []
        for seq, spec in enumerate(specs):
            try:
                if isinstance(spec, str):  # routing refused it: the string is the reason
                    raise ValueError(spec)
                if spec.mode is None:
                    raise ValueError("no mode: route the job first (core/intake/routing.submit_jobs)")
                rows.append((seq, source, spec.external_id or uuid.uuid4().hex, spec.processor,
                             spec.processor_version, spec.mode, spec.encoded_payload(), spec.max_attempts,
                             spec.callback_url, spec.due_at))
            except ValueError as exc:
                report.rejected.append(Rejection(seq, getattr(spec, "external_id", None), str(exc)))
        ext_ids = {row[0]: row[2] for row in rows}
        with self._pool.connection() as conn, conn.cursor() as cur:
            inserted = []
            cur.execute(intake_sql.CREATE_STAGING)
            try:
                with conn.transaction():
                    inserted = self._insert_staged(cur, rows)
            except _ROW_ERRORS:  # find the row(s) PostgreSQL refuses, one at a time
                for row in rows:
                    try:
                        with conn.transaction():
                            inserted += self._insert_staged(cur, [row], clear=True)
                    except _ROW_ERRORS as exc:
                        refusal = getattr(getattr(exc, "diag", None), "message_primary", None) or str(exc)
                        report.rejected.append(Rejection(row[0], row[2], f"refused by PostgreSQL: {refusal}"))
        for seq, job_id in inserted:
            if job_id is None:
                report.rejected.append(Rejection(seq, ext_ids[seq], f"duplicate id {ext_ids[seq]!r} for source {source!r}"))
            else:
                report.accepted.append(job_id)
        report.rejected.sort(key=lambda r: r.index)
        return report

    def _insert_staged(self, cur: psycopg.Cursor, rows: list[tuple], *, clear: bool = False) -> list[tuple]:
        with cur.copy(intake_sql.COPY_STAGING) as copy:
            for row in rows:
                copy.write_row(row)
        inserted = cur.execute(intake_sql.INSERT_FROM_STAGING, {"actor": self.owner}).fetchall()
        if clear:
            cur.execute(intake_sql.CLEAR_STAGING)
        return inserted

    def review_unchecked(
        self, check: Callable[[dict[str, Any]], tuple[str, str]], *, limit: int = 10_000
    ) -> tuple[int, list[tuple[int, str]]]:
        """Review pending rows other applications inserted (none is claimable before). `check(row)` gets
        the row (processor, processor_version, mode, payload, due_at, callback_url) and returns the
        (version, mode) to pin, or raises ValueError: the row then fails with that reason (and, for an
        UnusableCallback, without a stamp to that callback). Returns (accepted count, [(job id, reason) refused])."""
        accepted, refused = [], []
        with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            for row in cur.execute(intake_sql.UNREVIEWED_JOBS, {"limit": limit}).fetchall():
                try:
                    accepted.append((row["id"], *check(row)))
                except ValueError as exc:
                    refused.append((row["id"], str(exc), isinstance(exc, UnusableCallback)))
            if accepted:
                ids, versions, modes = (list(col) for col in zip(*accepted, strict=True))
                cur.execute(job_sql.ACCEPT_REVIEWED, {"ids": ids, "versions": versions, "modes": modes,
                                                      "actor": "intake"})
            if refused:
                ids, reasons, drop = (list(col) for col in zip(*refused, strict=True))
                cur.execute(job_sql.REFUSE_REVIEWED, {"ids": ids, "reasons": reasons, "drop_callback": drop,
                                                      "actor": "intake"})
        return len(accepted), [(job_id, reason) for job_id, reason, _ in refused]
