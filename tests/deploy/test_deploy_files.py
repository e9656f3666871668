"""The deployment kit, checked where no Docker daemon or cluster runs: deploy/compose.yaml, the Dockerfile,
deploy/dagster.yaml and the Helm values parse; every image, environment variable and command they name
exists; the Forge commands they run start in-process with the same arguments; no secret is written in them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from forge_dagster.cli import build_parser, main
from forge_dagster.constants import GPU_NODE_LABEL
from forge_dagster.core import runtime
from forge_dagster.core.store import ForgeStore
from tests.deploy.deploy_files import (
    DEPLOY,
    FOREIGN_ENV,
    ROOT,
    compose,
    compose_commands,
    dockerfile_cmd,
    env_names,
    helm_values,
    k8s_commands,
    k8s_manifests,
    project_source,
)

BIN = Path(sys.executable).parent
OFFICIAL_IMAGES = {"postgres:15", "redis:7", "ollama/ollama:latest"}


def _all_commands() -> list[list[str]]:
    return [*compose_commands().values(), *k8s_commands(), dockerfile_cmd(),
            ["dagster", "code-server", "start", *helm_values()["dagster-user-deployments"]["deployments"][0]["codeServerArgs"]]]


def test_every_forge_command_of_the_deployment_parses_with_the_forge_cli():
    forge = [c for c in _all_commands() if c[0] == "forge"]
    assert {c[1] for c in forge} >= {"work", "health", "status", "metrics"}
    for command in forge:
        build_parser().parse_args(command[1:])  # exits (SystemExit) on an unknown command or option


def test_every_dagster_command_of_the_deployment_exists_with_its_options():
    for command in [c for c in _all_commands() if c[0].startswith("dagster")]:
        words = [w for w in command[1:] if not w.startswith("-")]
        subcommands = words[:2] if command[0] == "dagster" else words[:1]
        if command[0] == "dagster-webserver":
            subcommands = []
        done = subprocess.run([str(BIN / command[0]), *subcommands, "--help"], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, (command, done.stderr[-2000:])
        for option in [w for w in command[1:] if w.startswith("-")]:
            assert option in done.stdout, f"{command}: {option} not an option of {command[0]} {subcommands}"


def test_images_are_forge_or_named_official_ones_and_forge_builds_from_the_repo():
    images = {svc["image"] for svc in compose()["services"].values()}
    assert images - OFFICIAL_IMAGES == {"forge:latest"}
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies {source}, which is not in the repository"
    assert 'pip install ".[deploy]"' in (DEPLOY / "Dockerfile").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert "deploy = [" in pyproject and "dagster-docker" in pyproject and "dagster-k8s" in pyproject


def test_every_environment_variable_named_is_read_by_forge_or_belongs_to_dagster_or_an_image():
    source = project_source()
    text = "\n".join((DEPLOY / name).read_text() for name in
                     ("compose.yaml", "Dockerfile", "dagster.yaml", "forge.env.example", "helm/values.yaml",
                      "helm/forge-work.yaml"))
    named = env_names(text)
    assert {"FORGE_DATABASE_URL", "FORGE_DAGSTER_PG_URL", "FORGE_REDIS_URL", "OPENAI_API_KEY"} <= named
    unknown = sorted(n for n in named - FOREIGN_ENV if f'"{n}"' not in source and f"'{n}'" not in source
                     and f"env: {n}" not in source)
    assert unknown == []


def test_no_secret_is_written_in_the_deployment_files():
    for name, svc in compose()["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if any(word in key for word in ("PASSWORD", "KEY", "SECRET", "URL")) and "://" in str(value):
                assert "${POSTGRES_PASSWORD" in str(value) or "@" not in str(value), (name, key)
            elif any(word in key for word in ("PASSWORD", "KEY", "SECRET")):
                assert str(value).startswith("${"), (name, key)
    example = dict(line.split("=", 1) for line in (DEPLOY / "forge.env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert all(example[k] == "" for k in example if any(w in k for w in ("PASSWORD", "KEY", "SECRET", "WEBHOOK")))
    assert "deploy/forge.env" in (ROOT / ".gitignore").read_text().splitlines()
    assert "FORGE_DAGSTER_PG_URL" in (DEPLOY / "dagster.yaml").read_text()  # the URL by name, never its value


def test_deploy_dagster_yaml_is_what_forge_writes_with_the_docker_run_launcher(tmp_path):
    shipped = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    launcher = shipped.pop("run_launcher")
    written = runtime.write_dagster_yaml(tmp_path, "postgresql://forge:pw@postgres:5432/dagster", run_queue=True)
    assert shipped == yaml.safe_load(written.read_text())
    assert (launcher["module"], launcher["class"]) == ("dagster_docker", "DockerRunLauncher")
    assert launcher["config"]["network"] == compose()["networks"]["forge"]["name"]


def test_forge_writes_the_run_queue_limits_for_an_external_database_only(tmp_path):
    external = yaml.safe_load(runtime.write_dagster_yaml(tmp_path / "x", "postgresql://h/d", run_queue=True).read_text())
    runs = external["concurrency"]["runs"]
    assert runs["max_concurrent_runs"] == runtime.MAX_CONCURRENT_RUNS
    assert runs["tag_concurrency_limits"] == [{"key": runtime.PROVIDER_RUN_TAG, "limit": runtime.RUNS_PER_PROVIDER,
                                               "value": {"applyLimitPerUniqueValue": True}}]
    embedded = yaml.safe_load(runtime.write_dagster_yaml(tmp_path / "e", "postgresql://h/d").read_text())
    assert "runs" not in embedded["concurrency"]


def test_the_shipped_dagster_yaml_loads_as_an_instance_with_the_queue_and_the_docker_launcher(database_url, tmp_path,
                                                                                            monkeypatch):
    pytest.importorskip("dagster_docker", reason="in the dev extra: pip install -e '.[dev]'")
    import dagster as dg

    runtime.ensure_database(database_url, "forge_deploy_check")
    (tmp_path / "dagster.yaml").write_text((DEPLOY / "dagster.yaml").read_text())
    monkeypatch.setenv("FORGE_DAGSTER_PG_URL", runtime.psycopg2_url(runtime.with_database(database_url,
                                                                                          "forge_deploy_check")))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert type(instance.run_launcher).__name__ == "DockerRunLauncher"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        queue = instance.get_concurrency_config().run_queue_config
        assert queue.max_concurrent_runs == runtime.MAX_CONCURRENT_RUNS
        assert queue.tag_concurrency_limits[0]["key"] == runtime.PROVIDER_RUN_TAG


def test_helm_values_carry_forge_limits_secrets_launcher_and_gpu_runs():
    values = helm_values()
    queue = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert queue["maxConcurrentRuns"] == runtime.MAX_CONCURRENT_RUNS
    assert queue["tagConcurrencyLimits"] == [{"key": runtime.PROVIDER_RUN_TAG,
                                              "value": {"applyLimitPerUniqueValue": True},
                                              "limit": runtime.RUNS_PER_PROVIDER}]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["enabled"] is False
    [deployment] = values["dagster-user-deployments"]["deployments"]
    secrets = [deployment["envSecrets"], values["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"],
               values["dagsterDaemon"]["envSecrets"], values["dagsterWebserver"]["envSecrets"]]
    assert all(s == [{"name": "forge-secrets"}] for s in secrets)
    from forge_dagster.definitions import defs

    for job in ("nightly_chain", "train_adapter"):
        assert GPU_NODE_LABEL in defs.resolve_job_def(job).tags["dagster-k8s/config"]
    work = next(d for d in k8s_manifests() if d["kind"] == "Deployment")
    container = work["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": "forge-secrets"}}]
    drain_s = float(container["command"][container["command"].index("--drain-s") + 1])
    assert drain_s < work["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]


def test_compose_and_kubernetes_probe_workers_with_the_same_health_command():
    healthcheck = compose()["services"]["forge-work"]["healthcheck"]["test"][1:]
    readiness = next(c for c in k8s_commands() if c[:2] == ["forge", "health"])
    assert healthcheck == readiness


@pytest.fixture
def deployment_env(database_url, redis_url, schema, monkeypatch, tmp_path):
    """This process's environment as a deployed Forge container sees it (external PostgreSQL and Redis)."""
    for name in [k for k in os.environ if k.startswith("FORGE_")] + ["DAGSTER_HOME"]:
        monkeypatch.delenv(name, raising=False)
    for name, value in {"FORGE_DATABASE_URL": database_url, "FORGE_DB_SCHEMA": schema, "FORGE_REDIS_URL": redis_url,
                        "FORGE_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path / "dagster"), "FORGE_MODE": "external",
                        "FORGE_DAGSTER_PG_URL": ""}.items():
        monkeypatch.setenv(name, value)  # restored afterwards, whatever `forge` sets
    return tmp_path


def test_the_init_and_readiness_commands_run_in_process_and_answer_zero(deployment_env):
    commands = compose_commands()
    assert main(commands["forge-init"][1:]) == 0
    queue = yaml.safe_load((deployment_env / "dagster" / "dagster.yaml").read_text())["concurrency"]["runs"]
    assert queue["tag_concurrency_limits"][0]["key"] == runtime.PROVIDER_RUN_TAG  # external: the queue's limits
    readiness = compose()["services"]["forge-work"]["healthcheck"]["test"][1:]
    assert main(readiness[1:]) == 0


def test_the_worker_command_starts_in_process_and_stops_on_sigterm(deployment_env, database_url, schema):
    command = compose_commands()["forge-work"]
    seen: list[bool] = []
    with ForgeStore(database_url, schema, pool_size=1) as store:
        def stop_once_running() -> None:  # keys registered: the claim loop has started
            deadline = time.monotonic() + 120
            while not store.keys.all() and time.monotonic() < deadline:
                time.sleep(0.05)
            seen.append(bool(store.keys.all()))
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=stop_once_running, daemon=True).start()
        assert main(command[1:]) == 0
    assert seen == [True]
