"""Bad input, generated: intake files and Python API calls full of broken JSON, wrong types, huge fields,
NUL characters, lone surrogates, invalid UTF-8, unknown processors and duplicate ids. Every bad item is
refused by itself with a reason that names it (line number, or index and id); every good one goes in
with its input intact; nothing crashes."""

from __future__ import annotations

import codecs
import json
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forge_dagster.core.intake.inbox import intake_file
from forge_dagster.core.intake.lines import UnreadableFile
from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.models import JobSpec
from forge_dagster.core.platform.catalog import load_processors
from tests.helpers import forge_env, forge_process

pytestmark = pytest.mark.chaos

SETTINGS = settings(max_examples=25, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Text a user may legitimately send: any Unicode but NUL and lone surrogates (which JSON text may carry
# as escapes, and which are tried as bad input below). Raw CR/LF never reach a line: JSON escapes them.
clean_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)

GOOD, BAD, EITHER = "good", "bad", "either"


def _good(i: int, subject: str, body: str) -> dict:
    return {"id": f"g{i}", "processor": "ticket_triage", "input": {"subject": subject, "body": body}}


@st.composite
def intake_lines(draw) -> tuple[bytes, list[str], dict[int, dict]]:
    """(file bytes, per-line expectation, {id: input} of the good lines)."""
    kinds = draw(st.lists(st.sampled_from(
        ["good", "good", "nul", "surrogate", "bad_utf8", "broken", "wrong_type", "huge", "unknown", "dup",
         "not_object", "blank", "extra_field"]), min_size=1, max_size=12))
    lines, expect, goods, ids = [], [], {}, []
    for i, kind in enumerate(kinds):
        good = _good(i, draw(clean_text), draw(clean_text))
        if kind == "good":
            lines.append(json.dumps(good).encode())
            expect.append(GOOD)
            goods[good["id"]] = good["input"]
            ids.append(good["id"])
            continue
        if kind == "blank":
            lines.append(b"   ")
            expect.append("blank")
            continue
        expect.append(BAD)
        if kind == "nul":
            good["input"]["subject"] += "\x00"
            lines.append(json.dumps(good).encode())
        elif kind == "surrogate":
            lines.append(json.dumps(good).replace('"body": "', '"body": "\\udc80', 1).encode())
        elif kind == "bad_utf8":
            lines.append(json.dumps(good).encode().replace(b'"body": "', b'"body": "\xff\xfe', 1))
        elif kind == "broken":
            text = json.dumps(good).encode()
            lines.append(text[:draw(st.integers(1, len(text) - 1))])
        elif kind == "wrong_type":
            field, value = draw(st.sampled_from([("input", ["a list"]), ("input", "text"), ("max_attempts", "3"),
                                                 ("processor", 7), ("id", 12), ("mode", "sometimes")]))
            lines.append(json.dumps({**good, field: value}).encode())
        elif kind == "huge":
            good["input"]["body"] = "x" * 300_000
            lines.append(json.dumps(good).encode())
        elif kind == "unknown":
            lines.append(json.dumps({**good, "processor": "no_such_" + uuid.uuid4().hex[:6]}).encode())
        elif kind == "dup":
            if not ids:
                expect[-1] = GOOD
                goods[good["id"]] = good["input"]
                ids.append(good["id"])
                lines.append(json.dumps(good).encode())
            else:
                lines.append(json.dumps({**good, "id": draw(st.sampled_from(ids))}).encode())
        elif kind == "not_object":
            lines.append(json.dumps(draw(st.sampled_from([[1, 2], "text", 3, None]))).encode())
        elif kind == "extra_field":
            lines.append(json.dumps({**good, "priority": "high"}).encode())
    bom = codecs.BOM_UTF8 if draw(st.booleans()) else b""  # a UTF-8 byte-order mark costs no line
    return bom + b"\n".join(lines) + b"\n", expect, goods


@SETTINGS
@given(intake_lines())
def test_generated_intake_files_refuse_each_bad_line_by_number_and_enqueue_the_good_ones(
    store, tmp_path_factory, case,
):
    data, expect, goods = case
    path = tmp_path_factory.mktemp("intake") / "jobs.jsonl"
    path.write_bytes(data)
    source = f"file:{uuid.uuid4().hex}"
    report = intake_file(store, load_processors(), path, source=source)

    refused = {r["line"]: r["error"] for r in report.rejected}
    assert len(refused) == len(report.rejected), "one error per line"
    assert all(isinstance(e, str) and e.strip() for e in refused.values())
    assert set(refused) == {n for n, e in enumerate(expect, start=1) if e == BAD}, (refused, expect)
    assert report.accepted == len(goods)
    with store.transaction() as conn:
        stored = {ext: payload for ext, payload in conn.execute(
            "SELECT external_id, payload FROM jobs WHERE source = %s", (source,))}
    assert stored == goods


# Python's codec names, and the encoding the refusal must name (plain utf-16/32 write a little-endian BOM).
FOREIGN = {"utf-16": "UTF-16LE", "utf-16-le": "UTF-16LE", "utf-16-be": "UTF-16BE",
           "utf-32": "UTF-32LE", "utf-32-le": "UTF-32LE", "utf-32-be": "UTF-32BE"}


@SETTINGS
@given(st.lists(st.tuples(clean_text, clean_text), min_size=1, max_size=5), st.sampled_from(sorted(FOREIGN)))
def test_a_file_in_utf16_or_utf32_is_refused_whole_naming_its_encoding(store, tmp_path_factory, texts, codec):
    path = tmp_path_factory.mktemp("intake") / "jobs.jsonl"
    text = "".join(json.dumps(_good(i, subject, body)) + "\n" for i, (subject, body) in enumerate(texts))
    path.write_bytes(text.encode(codec))
    source = f"file:{uuid.uuid4().hex}"
    with pytest.raises(UnreadableFile, match=rf"^wrong encoding \({FOREIGN[codec]}; Forge reads UTF-8\)$"):
        intake_file(store, load_processors(), path, source=source)
    assert store.jobs.counts(source=source) == {}


odd_text = st.text(max_size=30)  # anything: NUL, lone surrogates, control characters
odd_id = st.one_of(st.none(), st.text(min_size=1, max_size=30))  # ids are 1 to 200 characters


@SETTINGS
@given(st.lists(st.tuples(odd_text, odd_text, st.sampled_from(["ticket_triage", "no_such", "\x00", "ticket\ud800"]),
                          odd_id), min_size=1, max_size=10))
def test_python_api_refuses_each_unstorable_job_by_itself_and_keeps_the_rest_intact(store, items):
    specs = [JobSpec(processor, {"subject": subject, "body": body}, external_id=ext, mode="batch")
             for subject, body, processor, ext in items]
    source = f"api:{uuid.uuid4().hex}"
    report = submit_jobs(store, specs, source=source)

    assert len(report.accepted) + len(report.rejected) == len(specs)
    assert all(r.error.strip() and 0 <= r.index < len(specs) for r in report.rejected)
    assert len({r.index for r in report.rejected}) == len(report.rejected)
    refused = {r.index for r in report.rejected}
    seen: set[str] = set()
    for i, spec in enumerate(specs):
        text = json.dumps([spec.payload, spec.processor, spec.external_id], ensure_ascii=False)
        storable = "\\u0000" not in text and not any(0xD800 <= ord(c) <= 0xDFFF for c in text)
        duplicate = spec.external_id is not None and spec.external_id in seen
        if storable and not duplicate:
            assert i not in refused, (spec, report.rejected)
        if i not in refused and spec.external_id is not None:
            seen.add(spec.external_id)
    with store.transaction() as conn:
        rows = conn.execute("SELECT payload FROM jobs WHERE id = ANY(%s) ORDER BY id", (report.accepted,)).fetchall()
    kept = [s.payload for i, s in enumerate(specs) if i not in refused]
    assert [r[0] for r in rows] == kept


def test_forge_submit_reports_every_bad_line_and_enqueues_the_good_ones(tmp_path, database_url, schema, store):
    good = _good(0, "Login fails", "500 on /login")
    lines = [
        json.dumps(good).encode(),
        b'{"id": "x", "processor": "ticket_triage", "input": {"subject": "cut',
        json.dumps({**good, "id": "nul", "input": {"subject": "a\x00b", "body": "b"}}).encode(),
        json.dumps({**good, "id": "sur"}).replace('"body": "', '"body": "\\ud800', 1).encode(),
        json.dumps({**good, "id": "utf"}).encode().replace(b"Login", b"Log\xc3\x28in"),
        json.dumps({**good, "id": "huge", "input": {"subject": "s", "body": "y" * 300_000}}).encode(),
        json.dumps({**good, "id": "unk", "processor": "'; DROP TABLE jobs; --"}).encode(),
        json.dumps({**good, "id": "types", "max_attempts": "many"}).encode(),
        json.dumps(good).encode(),  # the same id again
        json.dumps({**good, "id": "g1", "input": {"subject": "ünïcødé ✓ 𝄞", "body": "tab\tand \\ back"}}).encode(),
    ]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    proc = forge_process(["submit", str(path), "--json"], env=forge_env(database_url, schema), stdout=-1,
                         stderr=-1, text=True)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err  # some lines were refused
    assert "Traceback" not in err, err
    result = json.loads(out)
    assert result["accepted"] == 2
    assert [r["line"] for r in result["rejected"]] == [2, 3, 4, 5, 6, 7, 8, 9]
    assert all(r["error"] for r in result["rejected"])
    with store.transaction() as conn:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 2
        assert conn.execute("SELECT payload->>'subject' FROM jobs WHERE external_id = 'g1'").fetchone()[0] \
            == "ünïcødé ✓ 𝄞"
