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
    feeds: str = ""  # RSS/Atom/JSON feed files or URLs, comma-separated; none: the example feeds shipped with Forge
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
    # A GPU step that waited longer than this for the mutex, or was held this long by the GPU pool, says so
    # (a log line, its metadata and one Slack message).
    gpu_wait_notify_s: float = 30.0
    # Code review, security review and PR digest: local git repositories, comma-separated.
    repos: str = ""
    model_context_tokens: int = Field(default=8192, ge=512)  # what one review prompt may hold
    review_max_changes: int = Field(default=20, ge=1)  # commits reviewed per repository and night
    advisories: str = ""  # an advisory database file (or URL) in OSV's JSON format
    # Research scout: arXiv's Atom API by category and keywords; the top N new papers are summarised.
    arxiv_url: str = "https://export.arxiv.org/api/query"
    arxiv_categories: str = ""  # e.g. "cs.LG,cs.CL"; none: the scout is skipped
    arxiv_keywords: str = ""  # e.g. "lora,quantization,speculative decoding"
    arxiv_max_results: int = Field(default=50, ge=1)
    arxiv_top_n: int = Field(default=5, ge=0)
    # Ecosystem watch: projects (pyproject.toml, requirements*.txt or a folder holding them), comma-separated.
    projects: str = ""
    pypi_url: str = "https://pypi.org/pypi"
    atlas_dir: str = ""  # default: $FORGE_HOME/atlas
    atlas_weekday: int = Field(default=6, ge=0, le=6)  # the night the atlas is rebuilt (Monday 0 .. Sunday 6)

    @staticmethod
    def _list(value: str) -> list[str]:
        return [v.strip() for v in value.split(",") if v.strip()]

    @property
    def repo_list(self) -> list[str]:
        return self._list(self.repos)

    @property
    def project_list(self) -> list[str]:
        return self._list(self.projects)

    @property
    def arxiv_category_list(self) -> list[str]:
        return self._list(self.arxiv_categories)

    @property
    def arxiv_keyword_list(self) -> list[str]:
        return self._list(self.arxiv_keywords)

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
