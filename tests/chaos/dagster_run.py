"""One Forge Dagster run in a process of its own, as a run worker executes it, so a test can SIGKILL it:
`python -m tests.chaos.dagster_run JOB RUN_KEY [PARTITION]`. The instance is $DAGSTER_HOME's, the store and
the simulator come from the FORGE_* environment (the default resources), steps run in this process."""

from __future__ import annotations

import sys

import dagster as dg

from forge_dagster.constants import STORE_TAG
from forge_dagster.core.config import load_settings
from forge_dagster.definitions import build_definitions


def main(job_name: str, run_key: str, partition: str | None = None) -> int:
    job = build_definitions().resolve_job_def(job_name)
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(instance=instance, partition_key=partition, raise_on_error=False,
                                        tags={"dagster/run_key": run_key,  # as the sensors ask for it
                                              STORE_TAG: load_settings().store_schema})
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
