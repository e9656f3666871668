"""`python -m forge_dagster.cli`: the `forge` command."""

from forge_dagster.cli import main

raise SystemExit(main())
