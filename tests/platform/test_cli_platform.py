"""`forge processors | costs | budgets` as an operator uses them, against the test schema."""

from __future__ import annotations

import json

import pytest

from forge_dagster.core.intake.routing import submit_jobs
from forge_dagster.core.platform.catalog import PACKAGE_PROCESSORS_DIR
from forge_dagster.core.platform.pricing import PRICING_VERSION
from forge_dagster.core.platform.registry import load_catalog
from forge_dagster.core.store import JobSpec
from tests.helpers import run_batch_round
from tests.platform.conftest import example, ticket_input, write_processor

GOOD_REVIEW = {"sentiment": "positive", "score": 0.9, "aspects": ["battery"]}
OFF_SCHEMA_TICKET = {"category": "printer", "priority": "high", "summary": "Export does nothing."}


@pytest.fixture
def files(tmp_path):
    paths = {"ticket": tmp_path / "ticket.json", "review": tmp_path / "review.json",
             "bad_ticket": tmp_path / "bad.txt", "good_review": tmp_path / "good.txt"}
    paths["ticket"].write_text(json.dumps({"processor": "ticket_triage", "input": ticket_input(1)}))
    paths["review"].write_text(json.dumps({"review": "Battery lasts for days.", "rating": 5}))
    paths["bad_ticket"].write_text(f"Here you go: {json.dumps(OFF_SCHEMA_TICKET)}")
    paths["good_review"].write_text(json.dumps(GOOD_REVIEW))
    return paths


def test_processors_list_shows_every_version_with_its_status(forge_cli):
    code, out = forge_cli("processors", "list", "--json")
    assert code == 0
    assert {(r["name"], r["version"], r["status"], r["provider"]) for r in json.loads(out)} == {
        ("ticket_triage", "1.0.0", "active", "openai"), ("review_sentiment", "1.0.0", "active", "anthropic"),
        ("ticket_triage_responses", "1.0.0", "active", "openai"), ("product_embeddings", "1.0.0", "active", "openai"),
        ("comment_moderation", "1.0.0", "active", "openai")}


def test_preview_renders_the_exact_openai_batch_line_and_the_repair_a_bad_sample_leads_to(forge_cli, files):
    code, out = forge_cli("processors", "preview", "ticket_triage", "--input", str(files["ticket"]),
                          "--sample", str(files["bad_ticket"]), "--json")
    shown = json.loads(out)
    assert code == 3  # the sample does not validate
    line = shown["batch_line"]
    assert (line["method"], line["url"], line["custom_id"]) == ("POST", "/v1/chat/completions", "preview")
    assert line["body"]["response_format"]["type"] == "json_schema"
    assert line["body"]["messages"][-1]["content"] == "Subject: Ticket 1\n\nThe export button does nothing when I click it.\n"
    assert shown["realtime"] == {"endpoint": "POST /v1/chat/completions", "body": line["body"]}
    assert shown["sample"]["accepted"] is False and shown["sample"]["reason"].startswith("parse")
    repair = shown["repair"]["batch_line"]["body"]["messages"]
    assert [m["role"] for m in repair] == ["system", "user", "assistant", "user"]
    assert repair[2]["content"] == files["bad_ticket"].read_text()


def test_preview_renders_the_exact_anthropic_batch_entry_and_accepts_a_good_sample(forge_cli, files):
    code, out = forge_cli("processors", "preview", "review_sentiment", "--input", str(files["review"]),
                          "--sample", str(files["good_review"]), "--json")
    shown = json.loads(out)
    assert code == 0 and set(shown["batch_line"]) == {"custom_id", "params"}
    params = shown["batch_line"]["params"]
    assert params["tool_choice"] == {"type": "tool", "name": "emit_result"} and "system" in params
    assert "Star rating: 5/5" in params["messages"][0]["content"]
    assert shown["realtime"]["endpoint"] == "POST /v1/messages"
    assert shown["sample"] == {"accepted": True, "reason": "ok", "errors": [], "output": GOOD_REVIEW}
    assert "repair" not in shown


def test_an_input_that_does_not_fit_the_template_is_refused_by_preview(forge_cli, tmp_path):
    (tmp_path / "in.json").write_text(json.dumps({"subject": "no body"}))
    code, _ = forge_cli("processors", "preview", "ticket_triage", "--input", str(tmp_path / "in.json"))
    assert code == 1


def test_sync_promote_and_retire_from_the_command_line(forge_cli, tmp_path):
    extra = tmp_path / "more"
    write_processor(extra, example("ticket_triage"), version="2.0.0")
    assert forge_cli("processors", "list")[0] == 0  # the packaged examples are registered (and active)
    code, out = forge_cli("processors", "sync", "--dir", str(extra))
    assert code == 0 and "registered ticket_triage 2.0.0 (draft)" in out
    code, out = forge_cli("processors", "promote", "ticket_triage", "2.0.0")
    assert code == 0 and out.strip() == "ticket_triage 2.0.0 is active; 1.0.0 retired"
    code, _ = forge_cli("processors", "promote", "ticket_triage", "1.0.0")
    assert code == 1 and "retired and stays retired" in forge_cli.stderr
    code, out = forge_cli("processors", "show", "ticket_triage", "--json")
    shown = json.loads(out)
    assert (shown["version"], shown["status"]) == ("2.0.0", "active")
    assert [h["to_status"] for h in shown["history"]][-2:] == ["retired", "active"]
    code, out = forge_cli("processors", "retire", "ticket_triage")
    assert code == 0 and out.strip() == "ticket_triage 2.0.0 retired"


def test_costs_and_budgets_from_the_command_line(forge_cli, store, ports, sim):
    catalog = load_catalog(store, [PACKAGE_PROCESSORS_DIR])
    submit_jobs(store, [JobSpec("ticket_triage", ticket_input(i), processor_version="1.0.0") for i in range(2)])
    run_batch_round(store, catalog, ports)
    code, out = forge_cli("costs", "--by", "model", "--json")
    report = json.loads(out)
    assert code == 0 and [r["model"] for r in report["rows"]] == ["openai/gpt-4o-mini"]
    assert report["rows"][0]["attempts"] == report["total"]["attempts"] == 2
    assert report["rows"][0]["cost_usd"] == pytest.approx(float(store.batches.cost()), abs=1e-8)

    assert forge_cli("budgets", "set", "ticket_triage", "2.5")[0] == 0
    code, out = forge_cli("budgets", "--json")
    [row] = json.loads(out)
    assert (row["scope"], row["daily_usd"]) == ("ticket_triage", 2.5)
    assert row["booked_today"] == pytest.approx(float(store.batches.cost()), abs=1e-8)
    assert forge_cli("budgets", "clear", "ticket_triage")[0] == 0
    assert json.loads(forge_cli("budgets", "--json")[1]) == []


def test_the_price_list_shows_a_teams_prices_file_and_refuses_a_wrong_one(forge_cli, tmp_path, monkeypatch):
    prices = tmp_path / "prices.yaml"
    prices.write_text("version: acme-1\nprices: [{provider: openai, model: ft-triage, input: 0.3, output: 1.2}]\n")
    monkeypatch.setenv("FORGE_PRICES_FILE", str(prices))
    code, out = forge_cli("costs", "--prices", "--json")
    added = [r for r in json.loads(out) if r["model"] == "ft-triage"]
    assert code == 0 and added == [{"pricing_version": f"{PRICING_VERSION}+acme-1", "provider": "openai",
                                    "model": "ft-triage", "input": "0.3", "cached_input": "0.3", "output": "1.2",
                                    "batch_discount": "0.5"}]
    prices.write_text("version: acme-2\nprices: [{provider: openai, model: ft-triage, input: 0.3}]\n")
    code, _ = forge_cli("costs", "--prices")
    assert code == 1 and f"{prices}: prices[0]: missing output" in forge_cli.stderr
    assert forge_cli("work", "--until-idle")[0] == 2 and "missing output" in forge_cli.stderr
