"""What every `forge` command shares: the mode line, the store it opens, tables and failures.

Every command prints one line (on stderr) saying which mode it runs in (PostgreSQL, Redis, providers);
`--json` output goes to stdout. Errors the operator can fix exit with status 1 or 2.
"""

from __future__ import annotations

import sys
from typing import Any

from forge_dagster.core.config import load_settings
from forge_dagster.core.runtime import mode_line, open_store


def announce(runtime=None) -> None:
    """Print the mode line: of the runtime a command brought up, else of the settings (starting nothing)."""
    print(runtime.describe() if runtime is not None else mode_line(load_settings()), file=sys.stderr, flush=True)


def open_announced(**kwargs):
    """The store of this environment (bringing up the embedded default if needed), its mode line printed."""
    runtime, store = open_store(**kwargs)
    announce(runtime)
    return store


def table(rows: list[dict[str, Any]]) -> str:
    """Rows as a markdown table ("(none)" when empty)."""
    import pandas as pd  # pandas costs half a second to import: only the commands that print tables pay it

    return pd.DataFrame(rows).to_markdown(index=False) if rows else "(none)"


def fail(message: str, code: int = 1) -> int:
    """Say what went wrong on stderr; return the exit status."""
    print(f"forge: {message}", file=sys.stderr)
    return code
