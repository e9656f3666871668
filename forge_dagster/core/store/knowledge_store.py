"""The nightly runtime's tables: memories, fences, GPU results, research items, night steps and skips,
briefings, notices sent once, self-healing attempts, and the reports it reads from Forge's jobs.

Reached as `ForgeStore.knowledge`; it shares the store's connection pool.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from forge_dagster.core.store import knowledge_sql as ksql
from forge_dagster.core.store import nightly_sql as nsql
from forge_dagster.core.store import outbox_sql
from forge_dagster.core.store.knowledge_types import Fence, FencedOut, Memory, NewMemory


@dataclass(frozen=True)
class HealingWindow:
    """A signal's recent history: remedies tried, seconds since the last one, give-ups recorded."""

    remedies: int
    since_last_s: float | None
    gave_up: int


class KnowledgeRepository:
    def __init__(self, pool) -> None:
        self._pool = pool

    # -- fencing -----------------------------------------------------------------------------------
    @staticmethod
    def advance_fence(conn: psycopg.Connection, fence: Fence) -> None:
        """Raise the resource's high-water fence to `fence` in the caller's transaction, or raise FencedOut
        when a higher one is recorded, or the same one by another holder (the transaction must then roll
        back)."""
        params = {"resource": fence.resource, "fence": fence.number, "holder": fence.holder}
        if conn.execute(ksql.ADVANCE_FENCE, params).fetchone() is None:
            raise FencedOut(f"{fence.resource}: fence {fence.number} is stale; another lock holder already wrote")

    def current_fence(self, resource: str) -> int | None:
        """The highest fence written under `resource` (None before the first fenced write)."""
        with self._pool.connection() as conn:
            row = conn.execute(ksql.CURRENT_FENCE, {"resource": resource}).fetchone()
        return None if row is None else int(row[0])

    def record_gpu_result(self, fence: Fence, kind: str, detail: dict[str, Any]) -> int:
        """Record a result of GPU work under `fence` (FencedOut when another holder wrote since)."""
        with self._pool.connection() as conn:
            self.advance_fence(conn, fence)
            params = {"resource": fence.resource, "fence": fence.number, "kind": kind, "detail": Jsonb(detail)}
            return conn.execute(ksql.INSERT_GPU_RESULT, params).fetchone()[0]

    def gpu_results(self, resource: str) -> list[dict[str, Any]]:
        with self._pool.connection() as conn:
            rows = conn.execute(ksql.GPU_RESULTS, {"resource": resource}).fetchall()
        return [dict(zip(("id", "resource", "fence", "kind", "detail", "created_at"), r, strict=True)) for r in rows]

    # -- memories ----------------------------------------------------------------------------------
    def write_memories(self, memories: Iterable[NewMemory], *, fence: Fence | None = None) -> list[int]:
        """Insert memories in one transaction, dropping duplicates; fenced when `fence` is given."""
        ids = []
        with self._pool.connection() as conn:
            if fence is not None:
                self.advance_fence(conn, fence)
            for m in memories:
                ids.extend(row[0] for row in conn.execute(ksql.INSERT_MEMORY, self._memory_params(m, fence)))
        return ids

    @staticmethod
    def _memory_params(m: NewMemory, fence: Fence | None) -> dict[str, Any]:
        m = m.with_fingerprint()
        return {"source": m.source, "title": m.title, "content": m.content, "tags": list(m.tags),
                "fingerprint": m.fingerprint, "night": m.night, "fence": None if fence is None else fence.number}

    def known_fingerprints(self, fingerprints: Sequence[str]) -> set[str]:
        with self._pool.connection() as conn:
            return {r[0] for r in conn.execute(ksql.KNOWN_FINGERPRINTS, {"fingerprints": list(fingerprints)})}

    def _memories(self, query: str, params: dict[str, Any]) -> list[Memory]:
        with self._pool.connection() as conn:
            return [Memory(*row[:9], rank=float(row[9])) for row in conn.execute(query, params).fetchall()]

    def search(self, query: str, *, limit: int = 10, tag: str | None = None,
               include_compressed: bool = False) -> list[Memory]:
        params = {"query": query, "limit": limit, "tag": tag, "include_compressed": include_compressed}
        return self._memories(ksql.SEARCH_MEMORIES, params)

    def memories_of_night(self, night: str) -> list[Memory]:
        return self._memories(ksql.MEMORIES_OF_NIGHT, {"night": night})

    def memories_to_compress(self, since: datetime) -> list[Memory]:
        return self._memories(ksql.MEMORIES_TO_COMPRESS, {"since": since})

    def write_digest(self, digest: NewMemory, folded_ids: Sequence[int], *, fence: Fence | None = None
                     ) -> int | None:
        """Store a digest and mark the memories it folds as compressed into it, in one transaction.
        Returns the digest's id, or None when the same digest was already stored."""
        with self._pool.connection() as conn:
            if fence is not None:
                self.advance_fence(conn, fence)
            row = conn.execute(ksql.INSERT_MEMORY, self._memory_params(digest, fence)).fetchone()
            if row is None:
                return None
            conn.execute(ksql.MARK_COMPRESSED, {"into": row[0], "ids": list(folded_ids)})
            return int(row[0])

    def count_memories(self) -> tuple[int, int]:
        """(memories not folded into a digest, all memories)."""
        with self._pool.connection() as conn:
            active, total = conn.execute(ksql.COUNT_MEMORIES).fetchone()
        return int(active), int(total)

    # -- research and steps ------------------------------------------------------------------------
    def record_research_items(self, items: Sequence[dict[str, Any]], night: str) -> set[tuple[str, str]]:
        """Insert feed items; return (feed, item_id) of those never seen before."""
        new = set()
        with self._pool.connection() as conn:
            for item in items:
                row = conn.execute(ksql.INSERT_RESEARCH_ITEM, {**item, "night": night}).fetchone()
                if row is not None:
                    new.add((item["feed"], item["item_id"]))
        return new

    def save_step(self, night: str, step: str, output: dict[str, Any], *, fence: Fence | None = None) -> None:
        """Record (or replace) what `step` produced for `night`; a step that produced it on the GPU passes
        its lease's fence, and the write is refused (FencedOut) if another holder wrote since."""
        params = {"night": night, "step": step, "output": Jsonb(output), "fence": None if fence is None else fence.number}
        with self._pool.connection() as conn:
            if fence is not None:
                self.advance_fence(conn, fence)
            conn.execute(ksql.SAVE_STEP, params)
            conn.execute(nsql.FORGET_STEP_SKIP, params)

    def skip_step(self, night: str, step: str, reason: str) -> None:
        """Record that `step` did not run for `night` and why (not configured, not due); an output it
        recorded earlier that night is forgotten."""
        params = {"night": night, "step": step, "reason": reason}
        with self._pool.connection() as conn:
            conn.execute(nsql.SKIP_STEP, params)
            conn.execute(nsql.FORGET_STEP_OUTPUT, params)

    def night_skips(self, night: str) -> dict[str, str]:
        """{step: why it did not run} for one night."""
        with self._pool.connection() as conn:
            return {step: reason for step, reason, _ in conn.execute(nsql.NIGHT_SKIPS, {"night": night})}

    def night_notices(self, night: str) -> list[tuple[str, str]]:
        """(topic, text) of the notices sent about one night, oldest first."""
        with self._pool.connection() as conn:
            return [(topic, text or "") for topic, text in conn.execute(nsql.NIGHT_NOTICES, {"night": night})]

    def steps_between(self, first: str, last: str, steps: Sequence[str]) -> list[tuple[str, str, dict[str, Any]]]:
        """(night, step, output) of `steps` for the nights from `first` to `last` (inclusive)."""
        with self._pool.connection() as conn:
            rows = conn.execute(nsql.STEPS_BETWEEN, {"first": first, "last": last, "steps": list(steps)})
            return [(night, step, output) for night, step, output in rows]

    def atlas_memories(self, limit: int = 5000) -> list[Memory]:
        """Memories not folded into a digest, newest first (what the atlas shows)."""
        return self._memories(ksql.ATLAS_MEMORIES, {"limit": limit})

    def notify_once(self, key: str, topic: str, payload: dict[str, Any]) -> bool:
        """Write an outbox row ({topic}, key `key`) unless one was written under `key` before; the claim and
        the row commit together. Returns True when it was written now."""
        with self._pool.connection() as conn:
            claim = {"key": key, "topic": topic, "night": payload.get("night"), "text": payload.get("text")}
            if conn.execute(nsql.CLAIM_NOTICE, claim).fetchone() is None:
                return False
            conn.execute(outbox_sql.INSERT_OUTBOX, {"topic": topic, "key": key, "payload": Jsonb(payload)})
            return True

    def night_steps(self, night: str) -> dict[str, dict[str, Any]]:
        """{step: {"output": ..., "recorded_at": ...}} for one night, in the order they were recorded."""
        with self._pool.connection() as conn:
            rows = conn.execute(ksql.NIGHT_STEPS, {"night": night}).fetchall()
        return {step: {"output": output, "recorded_at": at} for step, output, at in rows}

    # -- reports from Forge's own tables -----------------------------------------------------------
    def job_outcomes(self, since: datetime, *, top_reasons: int = 5) -> dict[str, Any]:
        """Terminal outcomes, top failure reasons, retries, costs and badly ended batches since `since`."""
        p = {"since": since, "limit": top_reasons}
        with self._pool.connection() as conn:
            by_state = conn.execute(nsql.OUTCOMES_BY_STATE, p).fetchall()
            reasons = conn.execute(nsql.TOP_FAILURE_REASONS, p).fetchall()
            retries = conn.execute(nsql.RETRIES_SINCE, p).fetchone()[0]
            costs = conn.execute(nsql.COSTS_BY_MODEL, p).fetchall()
            batches = conn.execute(nsql.BATCHES_ENDED_BADLY, p).fetchall()
        return {
            "since": since.isoformat(),
            "by_state": [{"processor": pr, "state": st, "count": n} for pr, st, n in by_state],
            "top_failures": [{"state": st, "reason": r, "count": n} for st, r, n in reasons],
            "retries": int(retries),
            "costs": [{"provider": pv, "model": m, "jobs": n, "input_tokens": int(i), "output_tokens": int(o),
                       "cost_usd": float(c)} for pv, m, n, i, o, c in costs],
            "batches_ended_badly": {st: n for st, n in batches},
        }

    def queue_depths(self) -> dict[str, dict[str, float]]:
        """{mode: {"pending": n, "oldest_age_s": s}} for pending jobs."""
        with self._pool.connection() as conn:
            rows = conn.execute(nsql.QUEUE_DEPTHS).fetchall()
        return {mode: {"pending": int(n), "oldest_age_s": float(age)} for mode, n, age in rows}

    # -- briefings ---------------------------------------------------------------------------------
    def send_briefing(self, night: str, level: str, markdown: str, digest: str | None, first: dict[str, Any],
                      correction: dict[str, Any] | None) -> str | None:
        """Store the night's briefing and tell Slack what changed, in one transaction: the first version
        writes `first` ({topic, key, payload}) and returns "sent"; a later one whose `digest` (its level
        and failures) differs from what was sent writes `correction` and returns "corrected"; otherwise
        the text is updated, nothing is sent, and None is returned."""
        params = {"night": night, "level": level, "markdown": markdown, "digest": digest}
        with self._pool.connection() as conn:
            if conn.execute(nsql.INSERT_SENT_BRIEFING, params).fetchone() is not None:
                conn.execute(outbox_sql.INSERT_OUTBOX, {**first, "payload": Jsonb(first["payload"])})
                return "sent"
            sent_digest, _ = conn.execute(nsql.LOCK_BRIEFING, params).fetchone()
            if correction is None or digest is None or sent_digest is None or sent_digest == digest:
                conn.execute(nsql.ADOPT_BRIEFING_DIGEST if digest else nsql.UPDATE_BRIEFING, params)
                return None
            version = conn.execute(nsql.CORRECT_BRIEFING, params).fetchone()[0]
            payload = {**correction["payload"], "version": int(version)}
            conn.execute(outbox_sql.INSERT_OUTBOX, {**correction, "payload": Jsonb(payload)})
            return "corrected"

    def get_briefing(self, night: str) -> dict[str, Any] | None:
        with self._pool.connection() as conn:
            row = conn.execute(nsql.GET_BRIEFING, {"night": night}).fetchone()
        keys = ("night", "level", "markdown", "created_at", "updated_at")
        return None if row is None else dict(zip(keys, row, strict=True))

    # -- self-healing ------------------------------------------------------------------------------
    def decide_healing(self, signal: str, run_id: str | None, window_s: float, decide, *,
                       interrupted_after_s: float = 3600.0) -> tuple[str, int | None]:
        """Under the signal's lock, `decide(HealingWindow)` returns (action, outcome, detail, outbox):
        action 'remedy', 'gave_up' or 'skip'. A remedy or give-up is recorded, with `outbox` ({topic, key,
        payload} or None) written in the same transaction. Remedies left `running` for longer than
        `interrupted_after_s` are first marked interrupted. Returns (action, the recorded row's id)."""
        with self._pool.connection() as conn:
            conn.execute(nsql.LOCK_SIGNAL, {"signal": signal})
            conn.execute(nsql.MARK_INTERRUPTED, {"signal": signal, "after_s": interrupted_after_s})
            remedies, since_last, gave_up = conn.execute(
                nsql.HEALING_WINDOW, {"signal": signal, "window_s": window_s}).fetchone()
            window = HealingWindow(int(remedies), None if since_last is None else float(since_last), int(gave_up))
            action, outcome, detail, outbox = decide(window)
            if action == "skip":
                return action, None
            row = conn.execute(nsql.INSERT_HEALING, {"signal": signal, "run_id": run_id, "action": action,
                                                     "outcome": outcome, "detail": detail}).fetchone()
            if outbox is not None:
                conn.execute(outbox_sql.INSERT_OUTBOX, {**outbox, "payload": Jsonb(outbox["payload"])})
            return action, int(row[0])

    def finish_healing(self, row_id: int, outcome: str, detail: str | None) -> None:
        with self._pool.connection() as conn:
            conn.execute(nsql.FINISH_HEALING, {"id": row_id, "outcome": outcome, "detail": detail})

    def healing_history(self, signal: str | None = None) -> list[dict[str, Any]]:
        with self._pool.connection() as conn:
            rows = conn.execute(nsql.HEALING_HISTORY, {"signal": signal}).fetchall()
        keys = ("id", "signal", "run_id", "action", "outcome", "detail", "at")
        return [dict(zip(keys, r, strict=True)) for r in rows]
