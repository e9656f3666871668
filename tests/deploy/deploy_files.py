"""Reading the deployment files (deploy/): the commands, images and environment variables they name."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# Environment variables a deployment may name that Forge's code does not read itself: Dagster's, the
# official images', and compose's own knobs in deploy/forge.env.
FOREIGN_ENV = {"DAGSTER_HOME", "DAGSTER_CURRENT_IMAGE", "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB",
               "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR", "FORGE_WORKERS",
               "FORGE_WORK_CONCURRENCY"}


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def helm_values() -> dict:
    return yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())


def k8s_manifests() -> list[dict]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / "helm" / "forge-work.yaml").read_text()) if doc]


def compose_commands() -> dict[str, list[str]]:
    """Each compose service's command, with compose's `${VAR:-default}` substituted by its default."""
    return {name: [re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(arg)) for arg in svc["command"]]
            for name, svc in compose()["services"].items() if "command" in svc}


def k8s_commands() -> list[list[str]]:
    """Every container command and exec probe of the Kubernetes manifests."""
    found = []
    for doc in k8s_manifests():
        for container in doc["spec"]["template"]["spec"]["containers"]:
            found.append(container["command"])
            if "readinessProbe" in container:
                found.append(container["readinessProbe"]["exec"]["command"])
    return found


def dockerfile_cmd() -> list[str]:
    line = next(line for line in (DEPLOY / "Dockerfile").read_text().splitlines() if line.startswith("CMD "))
    return yaml.safe_load(line[4:])


def env_names(text: str) -> set[str]:
    """Upper-case names in `text` that look like environment variables of Forge, Dagster or the images."""
    return set(re.findall(r"\b((?:FORGE|DAGSTER|OPENAI|ANTHROPIC|OLLAMA|POSTGRES|PYTHON|PIP)_[A-Z0-9_]+|OLLAMA_HOST)\b",
                          text))


def project_source() -> str:
    return "\n".join(p.read_text() for p in (ROOT / "forge_dagster").rglob("*.py"))
