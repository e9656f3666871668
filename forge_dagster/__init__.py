"""Forge: LLM work as real infrastructure, orchestrated by Dagster."""
