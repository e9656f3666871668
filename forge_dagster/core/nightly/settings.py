"""The nightly chain's knobs, read from `FORGE_NIGHTLY_*` environment variables, and the night's key."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from zoneinfo import ZoneInfo

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from forge_dagster.core.config import EnvironSettings

ENV_PREFIX = "FORGE_NIGHTLY_"


class NightlySettings(EnvironSettings):
    """Schedule, model and thresholds of the nightly chain, each from `FORGE_NIGHTLY_<FIELD>` (its name in
    capitals): e.g. `FORGE_NIGHTLY_CRON`. Lists are comma-separated in the environment."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    timezone: str = Field(default="UTC", description="The timezone of the schedules and of a night's date.")
    cron: str = Field(default="0 2 * * *", description="When the nightly chain starts (02:00 every day).")
    weekly_cron: str = Field(default="0 4 * * 0", description="When the weekly consolidation runs (Sundays 04:00).")
    model: str = Field(default="llama3.2:3b", description="The Ollama model the chain warms up and uses.")
    feeds: str = Field(default="", description="RSS/Atom/JSON feed files or URLs for the article scan, comma-separated; "
                                               "none: the example feeds shipped with Forge.")
    window_h: float = Field(default=24.0, description='How far back "the night" looks at jobs, runs and costs.')
    disk_min_free_gb: float = Field(default=2.0, description="Free disk below which the disk check fails (below twice this: warns).")
    queue_depth_max: int = Field(default=10_000, description="Pending jobs above which the queues check warns.")
    pending_age_max_s: float = Field(default=6 * 3600, description="The oldest pending job's age above which the queues check warns.")
    failure_rate_warn: float = Field(default=0.05, description="The night's failure rate that warns.")
    failure_rate_fail: float = Field(default=0.25, description="The night's failure rate that fails.")
    outbox_lag_max_s: float = Field(default=900.0, description="The outbox lag above which the outbox check warns.")
    daemon_heartbeat_max_s: float = Field(default=300.0, description="The Dagster daemon's heartbeat age above which the daemon check fails.")
    gpu_acquire_timeout_s: float = Field(default=900.0, description="How long a GPU step waits for the GPU mutex.")
    healing_max_attempts: int = Field(default=3, ge=1, description="Remedies per signal within the healing window.")
    healing_cooldown_s: float = Field(default=300.0, description="The pause between two remedies of one signal.")
    healing_window_s: float = Field(default=24 * 3600, description="The window the remedy attempts are counted in.")
    healing_wait_s: float = Field(default=30.0, description="How long a remedy waits for the dependency to answer.")
    # It runs in a sensor tick, which Dagster stops after 60 s by default.
    healing_budget_s: float = Field(default=30.0, gt=0, description="The most one remedy may take.")
    ollama_restart_cmd: str | None = Field(
        default=None, description='Run when Ollama is down, e.g. "systemctl restart ollama"; unset: no restart.')
    gpu_wait_notify_s: float = Field(default=30.0, description=(
        "A GPU step that waited longer than this for the mutex, or was held this long by the GPU pool, says so "
        "(a log line, its metadata and one Slack message)."))
    repos: str = Field(default="", description="Local git repositories for code review, security review and the PR "
                                               "digest, comma-separated; none: those steps are skipped.")
    model_context_tokens: int = Field(default=8192, ge=512, description="What one review prompt may hold, in tokens.")
    review_max_changes: int = Field(default=20, ge=1, description="Commits reviewed per repository and night.")
    advisories: str = Field(default="", description="An advisory database file (or URL) in OSV's JSON format, for "
                                                    "the security review's dependency pins.")
    arxiv_url: str = Field(default="https://export.arxiv.org/api/query", description="arXiv's Atom API.")
    arxiv_categories: str = Field(default="", description='arXiv categories the research scout reads, e.g. '
                                                          '"cs.LG,cs.CL"; none: the scout is skipped.')
    arxiv_keywords: str = Field(default="", description='Keywords that score papers, e.g. "lora,quantization".')
    arxiv_max_results: int = Field(default=50, ge=1, description="Papers read per category and night.")
    arxiv_top_n: int = Field(default=5, ge=0, description="The best-scored papers summarised each night.")
    projects: str = Field(default="", description="Projects for the ecosystem watch (pyproject.toml, "
                                                  "requirements*.txt or a folder holding them), comma-separated.")
    pypi_url: str = Field(default="https://pypi.org/pypi", description="The PyPI JSON API.")
    atlas_dir: str = Field(default="", description="Where the markdown atlas of memories is written (default "
                                                   "$FORGE_HOME/atlas).")
    atlas_weekday: int = Field(default=6, ge=0, le=6, description="The night the atlas is rebuilt (Monday 0 .. "
                                                                  "Sunday 6).")

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


def load_nightly_settings(environ: Mapping[str, str] | None = None) -> NightlySettings:
    """The nightly settings of the process environment, or of `environ` alone when given."""
    if environ is None:
        return NightlySettings()
    return NightlySettings.of(environ)


def night_key(timezone: str, at: datetime | None = None) -> str:
    """The night a chain run belongs to: its date (YYYY-MM-DD) in `timezone`."""
    tz = ZoneInfo(timezone)
    moment = at.astimezone(tz) if at is not None else datetime.now(tz)
    return moment.date().isoformat()
