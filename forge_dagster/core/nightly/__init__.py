"""The nightly agent runtime's engine: health checks, the triage gate, research scans, knowledge
consolidation, the morning briefing and self-healing. No Dagster import here: the assets in
`forge_dagster/assets/nightly.py` call these functions and record what they return."""
