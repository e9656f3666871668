"""The manual's generated pages match the code, and every variable the code names is on the configuration page."""

import re

from forge_dagster.docs_pages import DOCS, PAGES, main
from tests.core.test_settings import variables_named_in_code


def test_committed_generated_pages_match_the_code():
    stale = [name for name, render in PAGES.items() if (DOCS / name).read_text() != render()]
    assert stale == [], "run python -m forge_dagster.docs_pages and commit the pages"
    assert main(["--check"]) == 0


def test_check_reports_a_page_that_drifted(tmp_path, capsys):
    assert main(["--docs", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(PAGES)
    page = tmp_path / "configuration.md"
    page.write_text(page.read_text().replace("FORGE_LEASE_TTL_S", "FORGE_LEASE_TTL"))
    assert main(["--docs", str(tmp_path), "--check"]) == 1
    assert "configuration.md" in capsys.readouterr().err


def test_every_forge_variable_named_in_the_code_is_on_the_configuration_page():
    page = (DOCS / "configuration.md").read_text()
    listed = set(re.findall(r"`(FORGE_[A-Z0-9_]+)`", page))
    named = {n for n in variables_named_in_code() if n.startswith("FORGE_")}
    missing = {n for n in named if n not in listed and not (n.endswith("_") and any(v.startswith(n) for v in listed))}
    assert missing == set(), "declare it in core/config.py (or core/nightly/settings.py), then regenerate the pages"
    assert {"FORGE_DATABASE_URL", "FORGE_NIGHTLY_MODEL", "FORGE_CONSOLE_TOKEN"} <= listed


def test_every_forge_command_is_on_the_cli_page():
    page = (DOCS / "cli.md").read_text()
    for command in ("submit", "work", "jobs retry", "batches cancel", "processors promote", "estimate", "console"):
        assert f"## `forge {command}`" in page
