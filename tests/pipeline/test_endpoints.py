"""Every endpoint through the engine on the official SDK and the simulator, in batch and realtime: responses,
embeddings and moderations jobs end validated, embeddings are stored compactly and exported as float32
lists, and the ledger books what each endpoint costs."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from forge_dagster.client import Forge
from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.models import Usage
from forge_dagster.core.ops.operator import OperatorError
from forge_dagster.core.platform.exports import (
    embedding_matrix,
    embeddings_array,
    export_validated_outputs,
    read_export,
)
from forge_dagster.core.platform.pricing import cost_usd
from forge_dagster.core.platform.validation import vector_digest
from forge_dagster.core.realtime import KeyRing, RealtimeConfig, RealtimeExecutor, keys_from_env
from forge_dagster.core.store import JobSpec
from tests.helpers import make_due, run_batch_round

EMBED, RESPONSES, MODERATE = "product_embeddings", "ticket_triage_responses", "comment_moderation"
INPUTS = {
    EMBED: lambda i: {"title": f"Lamp {i}", "description": "Dimmable LED lamp"},
    RESPONSES: lambda i: {"subject": f"Ticket {i}", "body": "The export button does nothing."},
    MODERATE: lambda i: {"comment": f"Comment {i}: thanks, that helped."},
}


def enqueue(store, processor: str, n: int, *, mode: str | None = None, max_attempts: int = 3) -> list[int]:
    specs = [JobSpec(processor, INPUTS[processor](i), processor_version="1.0.0", mode=mode,
                     max_attempts=max_attempts) for i in range(n)]
    return submit_jobs(store, specs).accepted


def rows(store, query: str, *params) -> list[tuple]:
    with store.transaction() as conn:
        return conn.execute(query, params).fetchall()


def test_each_endpoint_runs_as_a_batch_of_its_own_url_and_its_jobs_succeed(store, catalog, ports, sim):
    ids = {name: enqueue(store, name, 4) for name in INPUTS}
    ended = run_batch_round(store, catalog, ports)
    assert len(ended) == 3
    assert store.jobs.counts() == {"succeeded": 12}
    endpoints = {b.endpoint for b in sim.state.openai.batches.values()}
    assert endpoints == {"/v1/responses", "/v1/embeddings", "/v1/moderations"}

    answer = store.jobs.get(ids[RESPONSES][0])["output"]
    assert set(answer) == {"category", "priority", "summary"}
    moderation = store.jobs.get(ids[MODERATE][0])["output"]
    assert isinstance(moderation["flagged"], bool) and len(moderation["categories"]) == 13
    assert all(isinstance(v, bool) for v in moderation["categories"].values())


def test_an_embedding_is_stored_as_float32_bytes_bound_to_the_output_by_its_digest(store, catalog, ports, sim):
    [job_id] = enqueue(store, EMBED, 1)
    run_batch_round(store, catalog, ports)
    job = store.jobs.get(job_id)
    assert job["state"] == "succeeded"
    [(dimensions, vector)] = rows(store, "SELECT dimensions, vector FROM output_vectors WHERE job_id = %s", job_id)
    assert dimensions == 256 and len(vector) == 256 * 4
    assert job["output"] == {"dimensions": 256, "vector_sha256": vector_digest(bytes(vector))}
    # The stored result line keeps the vector as bytes, and its raw body a note in place of 256 JSON numbers.
    [(raw, line_vector)] = rows(store, "SELECT raw::text, vector FROM batch_results WHERE job_id = %s", job_id)
    assert bytes(line_vector) == bytes(vector)
    assert "forge:vector (256 floats)" in raw and len(raw) < 1500


def test_wrong_length_and_malformed_embeddings_never_succeed(store, catalog, ports, sim):
    sim.configure(schema_violation_rate=1.0)
    short = enqueue(store, EMBED, 2, max_attempts=1)
    run_batch_round(store, catalog, ports)
    assert {store.jobs.get(i)["state"] for i in short} == {"invalid"}
    assert "embedding: 128 numbers, expected 256" in store.jobs.get(short[0])["reason"]

    sim.configure(schema_violation_rate=0.0, malformed_rate=1.0)
    bad = [i for i in enqueue(store, EMBED, 2, max_attempts=2) if i not in short]
    run_batch_round(store, catalog, ports)
    make_due(store)
    run_batch_round(store, catalog, ports)
    assert {store.jobs.get(i)["state"] for i in bad} == {"invalid"}
    assert "no list of numbers" in store.jobs.get(bad[0])["reason"]
    assert rows(store, "SELECT count(*) FROM output_vectors")[0][0] == 0


def test_an_incomplete_response_is_a_truncation_retried_then_invalid(store, catalog, ports, sim):
    sim.configure(truncation_rate=1.0)
    ids = enqueue(store, RESPONSES, 3, max_attempts=2)
    run_batch_round(store, catalog, ports)
    make_due(store)
    run_batch_round(store, catalog, ports)
    assert store.jobs.counts() == {"invalid": 3}
    assert "truncated: length" in store.jobs.get(ids[0])["reason"]


def test_parquet_export_of_embeddings_reads_back_as_arrays_of_the_right_length(store, catalog, ports, sim, tmp_path):
    ids = enqueue(store, EMBED, 5)
    run_batch_round(store, catalog, ports)
    result = export_validated_outputs(store, catalog, EMBED, tmp_path / "e.parquet", "parquet")
    assert result.rows == 5 and result.kinds["embedding"] == "vector"
    frame = pd.read_parquet(tmp_path / "e.parquet")
    assert frame["job_id"].tolist() == ids
    assert all(len(v) == 256 and v.dtype == np.float32 for v in frame["embedding"])
    assert str(pq.read_schema(tmp_path / "e.parquet").field("embedding").type) == "list<element: float>"
    matrix = embedding_matrix(read_export(tmp_path / "e.parquet"))
    assert matrix.shape == (5, 256) and matrix.dtype == np.float32
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-3)
    # CSV carries the vectors as JSON lists, read back to float32 arrays with the kinds.
    csv = export_validated_outputs(store, catalog, EMBED, tmp_path / "e.csv", "csv")
    assert np.array_equal(embedding_matrix(read_export(csv.path, csv.kinds)), matrix)
    # What the Python client calls: the same vectors straight from the store, by job id.
    job_ids, vectors = embeddings_array(store, catalog, EMBED)
    assert job_ids.tolist() == ids and np.array_equal(vectors, matrix)
    client = Forge(store)
    client_ids, client_vectors = client.embeddings(EMBED)
    assert client_ids.tolist() == ids and np.array_equal(client_vectors, matrix)
    with pytest.raises(OperatorError, match="no embeddings"):
        client.embeddings(MODERATE)


def test_moderation_export_has_flagged_and_one_column_per_category(store, catalog, ports, sim, tmp_path):
    enqueue(store, MODERATE, 3)
    run_batch_round(store, catalog, ports)
    export_validated_outputs(store, catalog, MODERATE, tmp_path / "m.parquet", "parquet")
    frame = pd.read_parquet(tmp_path / "m.parquet")
    assert str(frame["flagged"].dtype) == "boolean" and len(frame) == 3
    assert {"categories.hate", "categories.violence/graphic", "category_scores.sexual"} <= set(frame.columns)


def test_the_ledger_books_embeddings_per_input_token_at_half_price_and_moderations_at_zero(
        store, catalog, ports, sim):
    enqueue(store, EMBED, 4)
    enqueue(store, MODERATE, 4)
    run_batch_round(store, catalog, ports)
    ledger = rows(store, "SELECT processor, input_tokens, output_tokens, cost_usd, batch_priced FROM costs")
    embeds = [r for r in ledger if r[0] == EMBED]
    mods = [r for r in ledger if r[0] == MODERATE]
    assert len(embeds) == 4 and len(mods) == 4  # every attempt booked once, moderations too
    for _, input_tokens, output_tokens, cost, batch in embeds:
        assert input_tokens > 0 and output_tokens == 0 and batch
        assert cost == Decimal(input_tokens) * Decimal("0.02") / 1_000_000 * Decimal("0.5")
    assert all(cost == 0 for *_, cost, _ in mods)


def test_every_new_endpoint_runs_realtime_through_the_sdk(store, catalog, sim):
    ids = {name: enqueue(store, name, 3, mode="realtime") for name in INPUTS}
    ring = KeyRing(keys_from_env({}, simulator_url=sim.url, timeout_s=10))
    RealtimeExecutor(store, catalog, ring, RealtimeConfig()).run_sync(until_idle=True)
    assert store.jobs.counts() == {"succeeded": 9}
    paths = {e["path"] for e in sim.requests()}
    assert {"/v1/responses", "/v1/embeddings", "/v1/moderations"} <= paths
    [(dimensions,)] = rows(store, "SELECT DISTINCT dimensions FROM output_vectors WHERE job_id = ANY(%s)",
                           ids[EMBED])
    assert dimensions == 256
    ledger = dict(rows(store, "SELECT processor, sum(cost_usd) FROM costs WHERE NOT batch_priced GROUP BY 1"))
    assert ledger[MODERATE] == 0 and ledger[EMBED] > 0 and ledger[RESPONSES] > 0
    realtime = rows(store, "SELECT input_tokens, cost_usd FROM costs WHERE processor = %s", EMBED)
    assert all(cost == cost_usd("openai", "text-embedding-3-small", Usage(input_tokens=tokens), batch=False)
               for tokens, cost in realtime)
