"""How often the pipeline's sensors tick and how soon a failed run's work is asked for again: each sensor's
own figures, or FORGE_SENSOR_INTERVAL_S / FORGE_RUN_RETRY_DELAY_S for all (demos and chaos tests that must
move faster than production polling)."""

from forge_dagster.core.config import load_settings


def sensor_interval(default_s: int) -> int:
    """A pipeline sensor's minimum interval: its own, or FORGE_SENSOR_INTERVAL_S (read when definitions load)."""
    return load_settings().sensor_interval_s or default_s


def retry_delay(default_s: float) -> float:
    """The wait before a failed run's work is asked for again: `default_s`, or FORGE_RUN_RETRY_DELAY_S."""
    configured = load_settings().run_retry_delay_s
    return default_s if configured is None else configured
