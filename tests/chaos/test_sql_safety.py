"""All SQL is parameterised: SQL metacharacters fed through every user-supplied field come back as data
and every table survives; and no module builds a statement from strings (a static audit)."""

from __future__ import annotations

import json

import pytest

from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.nightly.adapters import AdapterError, AdapterRegistry
from forge_dagster.core.nightly.knowledge import NewMemory, remember, search
from forge_dagster.core.platform.catalog import load_processors
from forge_dagster.core.platform.registry import load_catalog
from forge_dagster.core.store import JobSpec
from tests.chaos.batch_faults import drive_batches, simulator_ports
from tests.chaos.sql_audit import audit_package, audit_sources
from tests.helpers import ROOT, forge_env, forge_process

pytestmark = pytest.mark.chaos

NASTY = ["'; DROP TABLE jobs; --", "Robert'); DROP TABLE job_events;--", "' OR '1'='1", "\\", "\\'; --",
         "$$; DROP TABLE costs; $$", "$tag$ x $tag$", '"quoted"', "%s %(id)s {0} {}", "/* c */ -- c",
         "ünïcødé ✓ 𝄞 ٩(◕‿◕)۶", "tab\tnew\nline", "a;b|c`d"]


def _tables(store) -> set[str]:
    with store.transaction() as conn:
        return {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")}


def test_sql_metacharacters_in_every_job_field_round_trip_as_data_and_tables_survive(store, sim):
    tables = _tables(store)
    version = load_processors()["ticket_triage"].version
    specs = [JobSpec("ticket_triage", {"subject": text, "body": text, text: text}, external_id=text,
                     processor_version=version, callback_url=f"https://example.invalid/cb?q={text}")
             for text in NASTY if "\n" not in text and "\t" not in text]
    specs += [JobSpec("ticket_triage", {"subject": t, "body": t}, external_id=f"ws-{i}", processor_version=version)
              for i, t in enumerate(NASTY)]
    specs += [JobSpec(text, {"x": text}, external_id=f"proc-{i}", mode="batch") for i, text in enumerate(NASTY)]
    sources = {}
    for i, spec in enumerate(specs):  # one source per job: the source is user-supplied too
        report = submit_jobs(store, [spec], source=NASTY[i % len(NASTY)] + f"#{i}")
        assert report.accepted, report.rejected
        sources[report.accepted[0]] = (spec, NASTY[i % len(NASTY)] + f"#{i}")

    drive_batches(store, load_catalog(store), simulator_ports(sim.url))

    for job_id, (spec, source) in sources.items():
        job = store.jobs.get(job_id)
        assert (job["external_id"], job["processor"], job["payload"], job["callback_url"], job["source"]) == \
            (spec.external_id, spec.processor, spec.payload, spec.callback_url, source)
        if spec.processor == "ticket_triage":
            assert job["state"] == "succeeded", job["reason"]
        else:  # an unknown processor fails with its name quoted as given
            assert job["state"] == "failed" and repr(spec.processor) in job["reason"], job["reason"]
    assert _tables(store) == tables


def test_sql_metacharacters_in_memories_searches_budgets_and_registry_lookups_are_data(store, tmp_path):
    tables = _tables(store)
    ids = remember(store.knowledge, [NewMemory(source=t, title=f"finding {i} {t}", content=f"zebracorn {t}",
                                               tags=(t, "chaos")) for i, t in enumerate(NASTY)])
    assert len(ids) == len(NASTY)
    for text in NASTY:  # a query is data: whatever it holds, it is searched for, never run
        search(store.knowledge, text, tag=text)
        search(store.knowledge, f'"{text}" -{text} or {text}')
    found = {m.source: m for m in search(store.knowledge, "zebracorn", limit=50)}
    assert set(found) == set(NASTY)
    assert all(found[t].tags == [t, "chaos"] and found[t].content == f"zebracorn {t}" for t in NASTY)
    assert [m.source for m in search(store.knowledge, "zebracorn", tag=NASTY[0], limit=50)] == [NASTY[0]]

    costs = store.costs
    for i, text in enumerate(NASTY):
        costs.set_budget(text, i + 1)
        assert store.processors.events(text) == []
    assert {k: int(v) for k, v in costs.budgets().items()} == {t: i + 1 for i, t in enumerate(NASTY)}
    assert all(costs.clear_budget(t) for t in NASTY) and costs.budgets() == {}
    assert _tables(store) == tables


def test_adapter_names_with_metacharacters_or_path_tricks_are_refused_and_nothing_escapes(tmp_path):
    root, source = tmp_path / "adapters", tmp_path / "weights.bin"
    source.write_bytes(b"\x00weights")
    registry = AdapterRegistry(root)
    for name in [*NASTY, "../escape", "..", "a/../../b", "/abs", ""]:
        with pytest.raises(AdapterError) as refused:
            registry.register(source, name, "1.0.0")
        assert repr(name) in str(refused.value)
    assert [p.name for p in tmp_path.iterdir()] == ["weights.bin"]  # no folder made, inside or out


def test_memory_search_from_the_command_line_treats_the_query_as_data(database_url, schema, store):
    remember(store.knowledge, [NewMemory(source="cli", title="lease fencing", content="fencing tokens work")])
    query = "fencing'; DROP TABLE memories; -- $$ \\ \""
    proc = forge_process(["memories", "search", query, "--tag", query, "--json"],
                         env=forge_env(database_url, schema), stdout=-1, stderr=-1, text=True)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert json.loads(out) == []  # every word must match, and the tag does not exist
    assert [m.title for m in search(store.knowledge, "fencing")] == ["lease fencing"]


def test_no_module_builds_sql_from_strings():
    findings = audit_package(ROOT / "forge_dagster")
    assert not findings, "\n".join(map(str, findings))


def test_the_sql_audit_catches_statements_built_from_strings():
    source = (
        "def run(conn, name, query):\n"
        "    conn.execute(f'SELECT * FROM {name}')\n"
        "    conn.execute('SELECT %s' % name)\n"
        "    text = 'DELETE FROM ' + name\n"
        "    conn.execute(text)\n"
        "    conn.execute(sql.SQL(f'DROP TABLE {name}'))\n"
        "    conn.execute('SELECT {}'.format(name))\n"
        "    conn.execute(query)\n"
        "def caller(conn):\n"
        "    run(conn, 'x', 'SELECT ' + 'y')\n"
        "    conn.execute(sql.SQL('SELECT {}').format(sql.Identifier('t')))\n"
        "    conn.execute(job_sql.CLAIM_JOBS, {})\n"
    )
    lines = sorted({int(str(f).split(":")[1]) for f in audit_sources({"probe.py": source})})
    assert lines == [2, 3, 5, 6, 7, 10]
    assert not audit_sources({"x_sql.py": "A = 'id, name'\nB = f'SELECT {A} FROM t'\n"})
    assert audit_sources({"x_sql.py": "import os\nB = f'SELECT {os.environ} FROM t'\n"})
