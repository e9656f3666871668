"""Run Forge's sensors and the runs they request inside this process, as the Dagster daemon would.

`forge demo` and the end-to-end tests use it so the whole path runs through Dagster (sensors, run
keys, dynamic partitions, asset jobs) with no daemon and no manual step; runs are recorded in the
given instance, so `forge dev` shows them afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dagster as dg


@dataclass
class TickReport:
    runs: list[tuple[str, str | None, bool]] = field(default_factory=list)  # (job, partition, success)
    skips: dict[str, str] = field(default_factory=dict)


RunCallback = Callable[[str, str | None, bool], None]  # (job, partition, success), after each run
StartCallback = Callable[[str, str | None], None]  # (job, partition), before each run


def merged_config(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`base` with `extra` laid over it, nested dicts merged key by key."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = merged_config(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else value
    return out


def _as_sensor_result(value: Any) -> dg.SensorResult:
    """Whatever a sensor function returned, as a SensorResult."""
    if isinstance(value, dg.SensorResult):
        return value
    if isinstance(value, dg.SkipReason):
        return dg.SensorResult(skip_reason=value)
    if isinstance(value, dg.RunRequest):
        return dg.SensorResult(run_requests=[value])
    return dg.SensorResult(run_requests=list(value or []))


class InProcessDaemon:
    """Evaluates sensors with their cursors and executes each new run request once (by run key), with
    the run config the request carries laid over `run_config(job)`; `on_start` and `on_run` hear of
    every run as it starts and ends, so a caller can show progress while a tick's runs go on."""

    def __init__(
        self, defs: dg.Definitions, instance: dg.DagsterInstance, sensor_names: list[str],
        run_config: Callable[[str], dict[str, Any]] | None = None, on_run: RunCallback | None = None,
        on_start: StartCallback | None = None,
    ) -> None:
        self.defs, self.instance, self.sensor_names = defs, instance, sensor_names
        self.run_config = run_config or (lambda job_name: {})
        self.on_run, self.on_start = on_run, on_start
        self.cursors: dict[str, str | None] = {name: None for name in sensor_names}
        self.seen_run_keys: set[str] = set()
        self._resources = defs.resources or {}

    def tick(self) -> TickReport:
        """One evaluation of every sensor, then the runs they asked for."""
        report = TickReport()
        for name in self.sensor_names:
            sensor = self.defs.resolve_sensor_def(name)
            with dg.build_sensor_context(instance=self.instance, cursor=self.cursors[name],
                                         resources=self._resources, definitions=self.defs) as context:
                result = _as_sensor_result(sensor(context))
            if result.cursor is not None:
                self.cursors[name] = result.cursor
            if result.skip_reason:
                report.skips[name] = result.skip_reason.skip_message
            # As the daemon does: partitions first, so the runs below can target them.
            for request in result.dynamic_partitions_requests or []:
                self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
            for request in result.run_requests or []:
                if request.run_key in self.seen_run_keys:
                    continue
                self.seen_run_keys.add(request.run_key)
                job_name = request.job_name or sensor.job_name
                job = self.defs.resolve_job_def(job_name)
                if self.on_start is not None:
                    self.on_start(job_name, request.partition_key)
                outcome = job.execute_in_process(
                    instance=self.instance, partition_key=request.partition_key,
                    tags={**request.tags, "dagster/run_key": request.run_key, "dagster/sensor_name": name},
                    run_config=merged_config(self.run_config(job_name), request.run_config or {}),
                    raise_on_error=False,
                )
                report.runs.append((job_name, request.partition_key, outcome.success))
                if self.on_run is not None:
                    self.on_run(job_name, request.partition_key, outcome.success)
        return report
