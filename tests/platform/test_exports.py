"""Exports: validated outputs as a DataFrame with one column per schema property (nested ones
flattened), written to Parquet and CSV and read back by pandas unchanged."""

from __future__ import annotations

import pandas as pd
import pytest

from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.platform.catalog import PACKAGE_PROCESSORS_DIR
from forge_dagster.core.platform.exports import (
    META_COLUMNS,
    read_export,
    validated_outputs_frame,
    write_export,
)
from forge_dagster.core.platform.registry import load_catalog
from forge_dagster.core.store import JobSpec
from tests.helpers import run_batch_round
from tests.platform.conftest import example, ticket_input, write_processor

NESTED_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["route", "labels", "confidence", "steps"],
    "properties": {
        "route": {"type": "object", "required": ["queue", "escalate"], "additionalProperties": False,
                  "properties": {"queue": {"type": "string", "enum": ["billing", "bugs", "accounts"]},
                                 "escalate": {"type": "boolean"}}},
        "labels": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "steps": {"type": "integer", "minimum": 0, "maximum": 9},
    },
}


@pytest.fixture
def exported(store, tmp_path, ports, sim):
    """A catalog with a nested-schema processor, and succeeded jobs of it and of ticket_triage."""
    folder = tmp_path / "processors"
    write_processor(folder, example("ticket_triage"), name="nested_triage", response_schema=NESTED_SCHEMA)
    catalog = load_catalog(store, [PACKAGE_PROCESSORS_DIR, folder])
    submit_jobs(store, [JobSpec(name, ticket_input(i), external_id=f"{name}-{i}", processor_version="1.0.0")
                   for name in ("ticket_triage", "nested_triage") for i in range(4)])
    run_batch_round(store, catalog, ports)
    assert store.jobs.counts() == {"succeeded": 8}
    return catalog


def test_the_frame_has_one_row_per_output_and_one_typed_column_per_schema_property(store, exported):
    frame = validated_outputs_frame(store, exported, "ticket_triage")
    assert list(frame.columns) == [*META_COLUMNS, "category", "priority", "summary"]
    assert len(frame) == 4 and list(frame["external_id"]) == [f"ticket_triage-{i}" for i in range(4)]
    for row in frame.itertuples(index=False):
        output = store.jobs.get(row.job_id)["output"]
        assert (row.category, row.priority, row.summary) == (output["category"], output["priority"], output["summary"])
    assert set(frame["processor_version"]) == {"1.0.0"}
    assert str(frame["finished_at"].dtype).startswith("datetime64") and frame["finished_at"].dt.tz is not None

    nested = validated_outputs_frame(store, exported, "nested_triage")
    assert list(nested.columns)[len(META_COLUMNS):] == ["route.queue", "route.escalate", "labels", "confidence",
                                                        "steps"]
    assert {c: str(nested[c].dtype) for c in ("route.escalate", "confidence", "steps")} == {
        "route.escalate": "boolean", "confidence": "Float64", "steps": "Int64"}
    first = store.jobs.get(int(nested["job_id"][0]))["output"]
    assert nested["route.queue"][0] == first["route"]["queue"] and nested["labels"][0] == first["labels"]


def test_an_export_round_trips_through_pandas_as_parquet_and_csv(store, exported, tmp_path):
    for processor in ("ticket_triage", "nested_triage"):
        frame = validated_outputs_frame(store, exported, processor)
        for fmt in ("parquet", "csv"):
            path = write_export(frame, tmp_path / f"{processor}.{fmt}", fmt)
            back = read_export(path, frame.attrs["kinds"] if fmt == "csv" else None)
            pd.testing.assert_frame_equal(back, frame)


def test_forge_export_writes_a_file_pandas_reads(store, exported, tmp_path, forge_cli):
    target = tmp_path / "exports" / "triage.parquet"
    code, out = forge_cli("export", "ticket_triage", "--format", "parquet", "--output", str(target))
    assert code == 0 and f"wrote 4 rows of ticket_triage to {target}" in out
    assert sorted(pd.read_parquet(target)["external_id"]) == [f"ticket_triage-{i}" for i in range(4)]
    code, _ = forge_cli("export", "ticket_triage", "--format", "csv", "--output", str(tmp_path / "t.csv"))
    assert code == 0 and len(pd.read_csv(tmp_path / "t.csv")) == 4
