"""A whole night with every step configured, against fixture servers speaking the real formats (arXiv
Atom, PyPI JSON, OSV JSON), a real git repository, the simulator's Ollama and Slack: every step finds
something, and the briefing (sent after the GPU release) tells it all."""

from __future__ import annotations

from datetime import date

import dagster as dg
import pytest

from forge_dagster.assets.nightly import NIGHT_TAG
from forge_dagster.assets.nightly_support import LEVEL_TAG
from forge_dagster.definitions import build_definitions
from tests.nightly.fixture_servers import FixtureServer, night_routes
from tests.nightly.night_helpers import FAKE_AWS_KEY, day_of_work, slack_until

NIGHT = "2030-01-13"
GREEN_HEALTH = {"health_checks": {"config": {"require_daemon": False}}}


@pytest.fixture
def configured_night(monkeypatch, tmp_path, store):
    repo = day_of_work(tmp_path / "service")
    with FixtureServer(night_routes()) as world:
        env = {"REPOS": str(repo), "PROJECTS": str(repo), "ADVISORIES": f"{world.url}/osv/advisories.json",
               "ARXIV_URL": f"{world.url}/api/query", "ARXIV_CATEGORIES": "cs.LG,cs.CL", "ARXIV_KEYWORDS": "lora",
               "ARXIV_TOP_N": "2", "PYPI_URL": f"{world.url}/pypi", "ATLAS_DIR": str(tmp_path / "atlas"),
               "ATLAS_WEEKDAY": str(date.fromisoformat(NIGHT).weekday()), "MODEL_CONTEXT_TOKENS": "512"}
        for key, value in env.items():
            monkeypatch.setenv(f"FORGE_NIGHTLY_{key}", value)
        # Last week's nights, as the chain recorded them: more work, so this week's trend is down.
        for night in ("2030-01-03", "2030-01-05"):
            store.knowledge.save_step(night, "job_outcomes", {"finished": 40, "invalid_rate": 0.0, "cost_usd": 0.5})
            store.knowledge.save_step(night, "triage", {"level": "GREEN"})
        yield repo, world


def test_a_configured_night_finds_something_at_every_step_and_tells_it(configured_night, resources, sim, store,
                                                                       tmp_path):
    repo, world = configured_night
    job = build_definitions(resources).resolve_job_def("nightly_chain")
    instance = dg.DagsterInstance.ephemeral()
    result = job.execute_in_process(run_config={"ops": GREEN_HEALTH}, tags={NIGHT_TAG: NIGHT}, instance=instance)
    assert result.success
    assert instance.get_run_by_id(result.run_id).tags[LEVEL_TAG] == "GREEN"
    steps = {name: s["output"] for name, s in store.knowledge.night_steps(NIGHT).items()}
    assert store.knowledge.night_skips(NIGHT) == {}

    review = steps["code_review"]
    assert review["changes"] == 3 and review["unreviewed_chunks"] == 0  # the merged branch's commit too
    assert all(r["chunks"] >= 1 for r in review["reviews"])
    assert review["findings"] >= 1
    assert all(f["file"] in r["files"] for r in review["reviews"] for f in r["findings"])

    security = steps["security_review"]
    assert [(s["rule"], s["file"]) for s in security["secrets"]] == [("aws_access_key", "settings.py")]
    assert FAKE_AWS_KEY not in str(security)  # redacted everywhere, the model's prompt included
    assert security["dropped"] == 1  # the placeholder password
    assert [(p["package"], p["advisory"]["id"]) for p in security["vulnerable_pins"]] == [("urllib3", "PYSEC-2021-108")]
    assert len(security["assessments"]) == 2

    digest = steps["pr_digest"]
    assert (digest["merged"], digest["open"]) == (1, 1) and digest["repos"][0]["summary"]

    scout = steps["research_scout"]
    assert [p["title"] for p in scout["papers"]] == ["LoRA adapters for quantised models",
                                                      "Speculative decoding on one GPU"]
    assert all(p.get("summary") for p in scout["papers"])
    [query] = [r["query"]["search_query"][0] for r in world.requests if r["path"] == "/api/query"]
    assert "cat:cs.LG" in query and "all:lora" in query

    assert len(steps["research_scan"]["new_items"]) == 6  # the example feeds that ship with Forge

    updates = {u["package"]: u for u in steps["ecosystem_watch"]["updates"]}
    assert updates["requests"]["yanked"].startswith("CVE-2018-18074")
    assert updates["requests"]["latest"] == "2.32.3" and "proxy auth" in updates["requests"]["what_changed"]
    assert [r["version"] for r in updates["urllib3"]["new_releases"]] == ["1.26.5"]

    assert steps["job_outcomes"]["finished"] == 0
    assert {"cost_usd", "jobs_finished"} <= {m["metric"] for m in steps["evolution"]["moves"]}

    sources = {m.source.split(":")[0] for m in store.knowledge.memories_of_night(NIGHT)}
    assert {"code", "security", "branches", "research", "ecosystem", "evolution"} <= sources

    index = (tmp_path / "atlas" / "current" / "index.md").read_text()
    assert "# Forge atlas" in index and "[security](topics/security.md)" in index

    text = store.knowledge.get_briefing(NIGHT)["markdown"]
    for expected in ("Code review: 3 changes", "Security review: 2 findings", "Branches: 1 merged, 1 open",
                     "LoRA adapters for quantised models", "requests==2.19.0 was yanked", "Trend: jobs finished down",
                     "Atlas rebuilt"):
        assert expected in text, expected
    assert "Not run" not in text
    # The briefing was written after the GPU was handed back.
    recorded = store.knowledge.night_steps(NIGHT)
    assert store.knowledge.get_briefing(NIGHT)["created_at"] >= recorded["gpu_release"]["recorded_at"]
    assert slack_until(store, sim, tmp_path, f"Morning briefing {NIGHT}")
