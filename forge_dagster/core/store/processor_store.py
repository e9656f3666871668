"""The processor registry in the store: versions, their status and its history, the earlier answers of
jobs (for repair prompts) and validated outputs (for exports).

Reached as `ForgeStore.processors`; it shares the store's connection pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Json

from forge_dagster.core.store import processor_sql as sql


class RegistryError(ValueError):
    """A registry change the status rules refuse (the message says why and what to do instead)."""


class ProcessorRepository:
    def __init__(self, pool, owner: str) -> None:
        self._pool, self.owner = pool, owner

    def _rows(self, query: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(query, params or {}).fetchall()

    # -- registry --------------------------------------------------------------------------------
    def list(self) -> list[dict[str, Any]]:
        """Every registered version (definition included), by name then registration order."""
        return self._rows(sql.LIST_PROCESSORS)

    def register(self, rows: Sequence[dict[str, Any]], *, actor: str | None = None) -> list[tuple[str, str, str]]:
        """Insert versions not registered yet. Each row: name, version, provider, model, mode, tags,
        definition, fingerprint, source, and `activate_if_new` (this version becomes active when its
        name has no version at all yet; otherwise it arrives as draft). Existing versions are left as
        they are. Returns (name, version, status) of the versions inserted now."""
        inserted = []
        with self._pool.connection() as conn:
            conn.execute(sql.LOCK_REGISTRY)
            known = {r[0] for r in conn.execute(sql.NAMES_WITH_VERSIONS)}
            for row in rows:
                status = "active" if row.get("activate_if_new") and row["name"] not in known else "draft"
                params = {**row, "status": status, "definition": Json(row["definition"]),
                          "tags": list(row.get("tags") or [])}
                if conn.execute(sql.INSERT_PROCESSOR, params).fetchone() is None:
                    continue
                inserted.append((row["name"], row["version"], status))
                conn.execute(sql.INSERT_EVENT, {"name": row["name"], "version": row["version"],
                                                "actor": actor or self.owner, "from_status": None,
                                                "to_status": status, "note": f"registered from {row.get('source')}"})
        return inserted

    def _status(self, conn: psycopg.Connection, name: str, version: str) -> str:
        found = conn.execute(sql.GET_STATUS, {"name": name, "version": version}).fetchone()
        if found is None:
            raise RegistryError(f"processor {name} {version} is not registered")
        return found[0]

    def _event(self, conn, name: str, version: str, actor: str | None, old: str, new: str, note: str) -> None:
        conn.execute(sql.INSERT_EVENT, {"name": name, "version": version, "actor": actor or self.owner,
                                        "from_status": old, "to_status": new, "note": note})

    def promote(self, name: str, version: str, *, actor: str | None = None, reason: str | None = None) -> str | None:
        """Make the draft `version` the active one; the version active before is retired (returned). A
        `reason` is kept in the promotion's event."""
        with self._pool.connection() as conn:
            conn.execute(sql.LOCK_REGISTRY)
            status = self._status(conn, name, version)
            if status == "active":
                raise RegistryError(f"processor {name} {version} is already active")
            if status == "retired":
                raise RegistryError(f"processor {name} {version} is retired and stays retired; register the "
                                    "definition under a new version and promote that")
            previous = conn.execute(sql.RETIRE_ACTIVE, {"name": name, "version": version}).fetchone()
            if previous is not None:
                self._event(conn, name, previous[0], actor, "active", "retired", f"replaced by {version}")
            conn.execute(sql.ACTIVATE, {"name": name, "version": version})
            note = (f"promoted over {previous[0]}" if previous else "promoted") + (f": {reason}" if reason else "")
            self._event(conn, name, version, actor, "draft", "active", note)
            return previous[0] if previous else None

    def retire(self, name: str, version: str | None = None, *, actor: str | None = None) -> str:
        """Retire `version` (default: the active one). Returns the version retired."""
        with self._pool.connection() as conn:
            conn.execute(sql.LOCK_REGISTRY)
            if version is None:
                active = conn.execute(sql.ACTIVE_VERSION, {"name": name}).fetchone()
                if active is None:
                    raise RegistryError(f"processor {name} has no active version to retire")
                version = active[0]
            status = self._status(conn, name, version)
            if status == "retired":
                raise RegistryError(f"processor {name} {version} is already retired")
            conn.execute(sql.RETIRE, {"name": name, "version": version})
            self._event(conn, name, version, actor, status, "retired", "retired")
            return version

    def events(self, name: str) -> list[dict[str, Any]]:
        """The status history of `name`'s versions, oldest first."""
        return self._rows(sql.PROCESSOR_EVENTS, {"name": name})

    # -- answers and outputs ---------------------------------------------------------------------
    def last_answers(self, jobs: Sequence[tuple[int, int]]) -> list[dict[str, Any]]:
        """For (job id, current attempt) pairs: each job's latest answered result line before that attempt."""
        if not jobs:
            return []
        return self._rows(sql.LAST_ANSWERS, {"ids": [j for j, _ in jobs], "attempts": [a for _, a in jobs]})

    def answer_counts(self, job_ids: Sequence[int]) -> dict[int, int]:
        """How many answered result lines each job has had so far."""
        if not job_ids:
            return {}
        with self._pool.connection() as conn:
            return {j: n for j, n in conn.execute(sql.ANSWER_COUNTS, {"ids": list(job_ids)})}

    def validated_outputs(self, processor: str, version: str | None = None) -> list[dict[str, Any]]:
        """Succeeded jobs of `processor` (of one version when given) with their outputs, by job id."""
        return self._rows(sql.VALIDATED_OUTPUTS, {"processor": processor, "version": version})
