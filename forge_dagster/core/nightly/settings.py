"""The nightly chain's knobs, read from `FORGE_NIGHTLY_*` environment variables, and the night's key."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class NightlySettings(BaseSettings):
    """Schedule, model and thresholds of the nightly chain. Lists are comma-separated in the environment."""

    model_config = SettingsConfigDict(env_prefix="FORGE_NIGHTLY_", extra="ignore")

    timezone: str = "UTC"
    cron: str = "0 2 * * *"  # 02:00 every day in `timezone`
    weekly_cron: str = "0 4 * * 0"  # Sundays 04:00
    model: str = "llama3.2:3b"
    feeds: str = ""  # RSS/Atom/JSON feed files or URLs, comma-separated
    window_h: float = 24.0  # how far back "the night" looks at Forge's jobs, runs and costs
    disk_min_free_gb: float = 2.0
    queue_depth_max: int = 10_000
    pending_age_max_s: float = 6 * 3600
    failure_rate_warn: float = 0.05
    failure_rate_fail: float = 0.25
    outbox_lag_max_s: float = 900.0
    daemon_heartbeat_max_s: float = 300.0
    gpu_acquire_timeout_s: float = 900.0  # how long a GPU step waits for the mutex (resource `gpu_mutex`)
    healing_max_attempts: int = Field(default=3, ge=1)
    healing_cooldown_s: float = 300.0
    healing_window_s: float = 24 * 3600
    healing_wait_s: float = 30.0  # how long a remedy waits for the dependency to answer again
    # The most one remedy may take: it runs in a sensor tick, which Dagster stops after 60 s by default.
    healing_budget_s: float = Field(default=30.0, gt=0)
    ollama_restart_cmd: str | None = None  # run when Ollama is down, e.g. "systemctl restart ollama"

    @property
    def feed_list(self) -> list[str]:
        return [f.strip() for f in self.feeds.split(",") if f.strip()]


def load_nightly_settings() -> NightlySettings:
    """The nightly settings from the current environment."""
    return NightlySettings()


def night_key(timezone: str, at: datetime | None = None) -> str:
    """The night a chain run belongs to: its date (YYYY-MM-DD) in `timezone`."""
    tz = ZoneInfo(timezone)
    moment = at.astimezone(tz) if at is not None else datetime.now(tz)
    return moment.date().isoformat()
