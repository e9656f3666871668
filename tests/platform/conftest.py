"""Fixtures for the prompt platform: YAML processor folders, the registry on a test schema, the batch
path against the simulator, and the `forge` command run in this process against the test schema."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from forge_dagster.core.platform.catalog import PACKAGE_PROCESSORS_DIR
from forge_dagster.resources.provider_keys import ProviderKeysResource


def example(name: str) -> dict:
    """A packaged example processor definition, as a dict to vary."""
    return yaml.safe_load((PACKAGE_PROCESSORS_DIR / f"{name}.yaml").read_text())


def write_processor(folder: Path, definition: dict, **changes) -> Path:
    """Write `definition` with `changes` as a YAML processor file in `folder`."""
    data = copy.deepcopy(definition)
    data.update(changes)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{data['name']}-{data['version']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def ports(sim):
    return ProviderKeysResource(simulator_url=sim.url).ports






def ticket_input(i: int) -> dict:
    return {"subject": f"Ticket {i}", "body": "The export button does nothing when I click it."}


@pytest.fixture
def forge_cli(database_url, schema, tmp_path, monkeypatch, capsys):
    """Run `forge ARGS` in this process against the test schema; returns (exit code, stdout), and keeps
    the last stderr as `.stderr`."""
    from forge_dagster.cli import main

    for name in ("FORGE_MODE", "DAGSTER_HOME", "FORGE_DAGSTER_PG_URL", "FORGE_PROCESSORS_DIR",
                 "OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FORGE_DATABASE_URL", database_url)
    monkeypatch.setenv("FORGE_DB_SCHEMA", schema)
    monkeypatch.setenv("FORGE_HOME", str(tmp_path / "forge-home"))

    def run(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        run.stderr = captured.err
        return code, captured.out

    return run


def read_json(text: str):
    return json.loads(text)
