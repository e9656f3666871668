"""Accepted embeddings beside their jobs, written in the transaction that succeeds the jobs (exports read
them with the outputs, processor_sql.VALIDATED_OUTPUTS)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from forge_dagster.core.models import AcceptedOutput
from forge_dagster.core.store import vector_sql


def write_output_vectors(conn: Any, items: Sequence[tuple[int, AcceptedOutput]]) -> None:
    """Store the vector of each (job id, accepted output) that has one, in `conn`'s transaction, after
    the jobs were succeeded (a job that is not `succeeded` now gets none)."""
    rows = [(job_id, accepted.vector) for job_id, accepted in items if accepted.vector is not None]
    if not rows:
        return
    conn.execute(vector_sql.INSERT_OUTPUT_VECTORS, {
        "ids": [job_id for job_id, _ in rows], "dimensions": [len(vector) // 4 for _, vector in rows],
        "vectors": [vector for _, vector in rows]})

