"""Forge: LLM work as real infrastructure, orchestrated by Dagster.

`from forge_dagster import Forge` gives the Python client (forge_dagster/client.py). It is loaded on first
use, not here: `import forge_dagster` stays light for the CLI and Dagster's code location, which never
need it (the client brings in pandas and the engine).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from forge_dagster.client import Forge

__all__ = ["Forge"]


def __getattr__(name: str) -> Any:
    if name == "Forge":
        return importlib.import_module("forge_dagster.client").Forge
    raise AttributeError(f"module 'forge_dagster' has no attribute {name!r}")
