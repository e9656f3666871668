"""Addresses of the console's pages, for links from elsewhere (Dagster asset metadata, messages)."""

from __future__ import annotations


def batch_page(console_url: str, batch_id: int) -> str:
    return f"{console_url.rstrip('/')}/batches/{int(batch_id)}"


def job_page(console_url: str, job_id: int) -> str:
    return f"{console_url.rstrip('/')}/jobs/{int(job_id)}"
