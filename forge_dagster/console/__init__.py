"""The operator's web console: server-rendered pages over the store (jobs, batches, processors, costs,
keys, the archive, the live fleet) and POST-only actions, served by `forge console` and `forge dev`."""

from forge_dagster.console.app import ConsoleConfig, create_app

__all__ = ["ConsoleConfig", "create_app"]
