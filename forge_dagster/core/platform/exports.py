"""Exports: a processor's validated outputs as a pandas DataFrame, and as Parquet or CSV files.

One row per succeeded job (hot and archived), with `job_id`, `external_id`, `source`,
`processor_version` and `finished_at`, then one column per property of the processor's response
schema, nested object properties flattened as `parent.child`. Column types follow the schema: strings,
nullable integers, floats and booleans; arrays of plain values stay lists; arrays of objects, and
objects without declared properties, are JSON text. CSV holds only text, so lists are written as JSON
and `read_export(path, kinds)` turns every column back into its type (an empty string reads as missing).
An embeddings processor's `embedding` column (kind `vector`) holds float32 numpy arrays, read from the
compact vector store; Parquet writes it as list<float32>, and `embedding_matrix` stacks it into one
(rows x dimensions) numpy array, which is how the Python client reads embeddings back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from forge_dagster.core.platform.catalog import ProcessorCatalog
from forge_dagster.core.platform.processors import Processor

FORMATS = ("parquet", "csv")
META_COLUMNS = {"job_id": "integer", "external_id": "string", "source": "string",
                "processor_version": "string", "finished_at": "timestamp"}
_DTYPES = {"string": "string", "integer": "Int64", "number": "Float64", "boolean": "boolean"}


def _kind(schema: Any) -> str:
    if not isinstance(schema, Mapping):
        return "json"
    if schema.get("x-forge-vector"):
        return "vector"
    types = schema.get("type")
    if isinstance(types, list):
        types = [t for t in types if t != "null"]
        types = types[0] if len(types) == 1 else None
    if types in _DTYPES:
        return types
    if types == "array":
        items = schema.get("items")
        plain = isinstance(items, Mapping) and items.get("type") in _DTYPES
        return "array" if plain else "json"
    if "enum" in schema and all(isinstance(v, str) for v in schema["enum"]):
        return "string"
    return "json"


def _flatten_schema(schema: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    columns: dict[str, str] = {}
    for name, sub in (schema.get("properties") or {}).items():
        path = f"{prefix}{name}"
        if isinstance(sub, Mapping) and sub.get("type") == "object" and sub.get("properties"):
            columns.update(_flatten_schema(sub, f"{path}."))
        else:
            columns[path] = _kind(sub)
    return columns


def output_columns(processors: Iterable[Processor]) -> dict[str, str]:
    """Column -> kind for outputs of these processor versions (first version's order first). The text
    policy without a schema gives one `text` column."""
    columns: dict[str, str] = {}
    for processor in processors:
        schema = processor.output_schema or {"properties": {"text": {"type": "string"}}}
        for column, kind in _flatten_schema(schema).items():
            columns.setdefault(column, kind)
    return columns


def _lookup(output: Any, path: str) -> Any:
    value = output
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _cell(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "vector":
        return np.frombuffer(value, dtype="<f4").copy()
    if kind == "json":
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    if kind == "array":
        return list(value) if isinstance(value, list) else json.dumps(value, ensure_ascii=False)
    return value


def _typed(frame: pd.DataFrame, kinds: Mapping[str, str]) -> pd.DataFrame:
    for column, kind in kinds.items():
        if kind == "timestamp":
            frame[column] = pd.to_datetime(frame[column], utc=True)
        elif kind in _DTYPES:
            frame[column] = frame[column].astype(_DTYPES[kind])
        else:
            frame[column] = frame[column].astype(object)
    return frame


def _column_name(column: str, meta: Mapping[str, str] = META_COLUMNS) -> str:
    return f"output.{column}" if column in meta else column


def frame_kinds(columns: Mapping[str, str], meta: Mapping[str, str] = META_COLUMNS) -> dict[str, str]:
    """Every column of an export frame -> its kind (metadata columns first)."""
    return {**meta, **{_column_name(c, meta): k for c, k in columns.items()}}


def outputs_frame(rows: Sequence[Mapping[str, Any]], meta: Mapping[str, str],
                  processors: Iterable[Processor]) -> pd.DataFrame:
    """`rows` (each its `meta` columns and an `output`) as a typed DataFrame: the meta columns, then one
    column per property of these processor versions' response schemas (output_columns); a key of an output
    that no schema declares is a JSON column of its own, and an output that is not a JSON object stays whole
    in one `output` column. A property named like a meta column is prefixed `output.`."""
    columns = output_columns(processors)
    covered = {c.split(".")[0] for c in columns}
    whole = False
    for row in rows:  # keys of outputs from versions not given, or that their schemas do not declare
        output = row["output"]
        if isinstance(output, Mapping):
            for key in output:
                if key not in covered:
                    columns.setdefault(key, "json")
        elif output is not None:
            whole = True
    kinds = frame_kinds(columns, meta)
    if whole:
        kinds.setdefault("output", "json")
    records = [
        {**{k: row[k] for k in meta},
         **{_column_name(c, meta): _cell(row.get("vector") if kind == "vector" else _lookup(row["output"], c), kind)
            for c, kind in columns.items()},
         **({"output": _cell(row["output"], "json")} if whole and not isinstance(row["output"], Mapping) else {})}
        for row in rows
    ]
    frame = pd.DataFrame.from_records(records, columns=list(kinds))
    frame.attrs["kinds"] = kinds
    return _typed(frame, kinds)


def validated_outputs_frame(
    store, catalog: ProcessorCatalog, processor: str, *, version: str | None = None
) -> pd.DataFrame:
    """The validated outputs of `processor` (one version, or all) as a DataFrame (see module doc)."""
    rows = store.processors.validated_outputs(processor, version)
    versions = [version] if version else sorted({r["processor_version"] for r in rows if r["processor_version"]})
    if processor in catalog:
        first = catalog[processor].version
        versions = sorted(versions, key=lambda v: v != first)
    known = [catalog.get_version(processor, v) for v in versions if (processor, v) in catalog]
    return outputs_frame(rows, META_COLUMNS, known)


def write_export(frame: pd.DataFrame, path: str | Path, fmt: str) -> Path:
    """Write an export frame as `parquet` or `csv` (lists as JSON text in CSV)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}: use {' or '.join(FORMATS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        if _vector_columns(frame):
            pq.write_table(_vectors_as_float32_lists(frame), path)
        else:
            frame.to_parquet(path, index=False)
        return path
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object:
            out[column] = [json.dumps(v.tolist() if isinstance(v, np.ndarray) else v, ensure_ascii=False)
                           if isinstance(v, list | np.ndarray) else v for v in out[column]]
    out.to_csv(path, index=False)
    return path


def _vector_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c, kind in frame.attrs.get("kinds", {}).items() if kind == "vector" and c in frame]


def _vectors_as_float32_lists(frame: pd.DataFrame) -> pa.Table:
    """The frame as an Arrow table whose vector columns are list<float32>."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    for column in _vector_columns(frame):
        index = table.schema.get_field_index(column)
        values = pa.array([None if v is None else v for v in frame[column]], type=pa.list_(pa.float32()))
        table = table.set_column(index, pa.field(column, pa.list_(pa.float32())), values)
    return table


def embedding_matrix(frame: pd.DataFrame, column: str = "embedding") -> np.ndarray:
    """The vectors of an export frame (or of a Parquet export read back) as one float32 array of shape
    (rows, dimensions); ValueError when a row has none or the lengths differ."""
    vectors = [np.asarray(v, dtype=np.float32) for v in frame[column] if v is not None]
    if len(vectors) != len(frame):
        raise ValueError(f"{len(frame) - len(vectors)} rows have no {column}")
    if not vectors:
        return np.zeros((0, 0), dtype=np.float32)
    if len({len(v) for v in vectors}) > 1:
        raise ValueError(f"{column} vectors differ in length: {sorted({len(v) for v in vectors})}")
    return np.stack(vectors)


def embeddings_array(
    store, catalog: ProcessorCatalog, processor: str, *, version: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(job ids, vectors) of an embeddings processor's validated outputs: int64 ids and one float32 array
    of shape (jobs, dimensions), in job order. For the Python client (`Forge.embeddings`)."""
    frame = validated_outputs_frame(store, catalog, processor, version=version)
    if frame.attrs["kinds"].get("embedding") != "vector":
        raise ValueError(f"processor {processor} has no embeddings (its endpoint is not embeddings)")
    return frame["job_id"].to_numpy(dtype=np.int64), embedding_matrix(frame)


def read_export(path: str | Path, kinds: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Read an export back. Parquet keeps its types; CSV needs `kinds` (from `frame.attrs['kinds']` or
    `frame_kinds(output_columns(...))`) to turn text back into typed columns and lists."""
    path = Path(path)
    if path.suffix == ".parquet" or (kinds is None and path.suffix != ".csv"):
        frame = pd.read_parquet(path)
        for column in frame.columns:  # lists of plain values come back as lists, vectors as float32 arrays
            if frame[column].dtype == object:
                frame[column] = [v if getattr(v, "dtype", None) == np.float32 else v.tolist() if hasattr(v, "tolist")
                                 else v for v in frame[column]]
        return frame
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    frame = frame.astype(object).where(frame.notna(), None)
    for column, kind in (kinds or {}).items():
        if kind == "array" and column in frame:
            frame[column] = [json.loads(v) if isinstance(v, str) else v for v in frame[column]]
        elif kind == "vector" and column in frame:
            frame[column] = [np.asarray(json.loads(v), dtype=np.float32) if isinstance(v, str) else v
                             for v in frame[column]]
        elif kind == "boolean" and column in frame:
            frame[column] = [None if v is None else v == "True" for v in frame[column]]
        elif kind in ("integer", "number") and column in frame:
            frame[column] = pd.to_numeric(frame[column])
    return _typed(frame, {k: v for k, v in (kinds or {}).items() if k in frame})


@dataclass(frozen=True)
class ExportResult:
    path: Path
    rows: int
    kinds: dict[str, str]


def export_validated_outputs(
    store, catalog: ProcessorCatalog, processor: str, path: str | Path, fmt: str, *, version: str | None = None
) -> ExportResult:
    """Write `processor`'s validated outputs to `path` as `fmt`; returns where, how many rows, and the
    column kinds (what `read_export` needs for CSV)."""
    frame = validated_outputs_frame(store, catalog, processor, version=version)
    written = write_export(frame, path, fmt)
    return ExportResult(written, len(frame), dict(frame.attrs["kinds"]))
