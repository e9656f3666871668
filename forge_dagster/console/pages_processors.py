"""The console's processor pages: every name and version with its state and rates, a diff between two
versions (prompt, schema, parameters) and the preview of a request for a sample input."""

from __future__ import annotations

import difflib
import json
from typing import Any

import yaml
from starlette.requests import Request
from starlette.routing import Route

from forge_dagster.console.context import Console, text_arg
from forge_dagster.core.platform.preview import preview_request
from forge_dagster.core.platform.registry import load_catalog
from forge_dagster.core.store.console_store import RATES_WINDOW

PROMPT_FIELDS = ("system", "template")
SCHEMA_FIELDS = ("response_schema",)


def diff_sections(old: dict[str, Any], new: dict[str, Any]) -> dict[str, list[str]]:
    """Unified diffs of two definitions: prompt, schema, and every other field as parameters."""
    def part(definition: dict[str, Any], fields: tuple[str, ...] | None) -> list[str]:
        chosen = {k: v for k, v in definition.items()
                  if (k in fields if fields else k not in PROMPT_FIELDS + SCHEMA_FIELDS + ("version",))}
        return yaml.safe_dump(chosen, sort_keys=True, allow_unicode=True, width=100).splitlines()

    sections = {"prompt": PROMPT_FIELDS, "schema": SCHEMA_FIELDS, "parameters": None}
    return {name: list(difflib.unified_diff(part(old, fields), part(new, fields), "old", "new", lineterm=""))
            for name, fields in sections.items()}


def routes(console: Console) -> list[Route]:
    store = console.store

    def processors(request: Request):
        rows = store.processors.list()
        rates = store.console.processor_rates()
        for row in rows:
            rate = rates.get((row["name"], row["version"]), {"ended": 0, "succeeded": 0, "invalid": 0})
            ended = rate["ended"] or 0
            row.update(rate, valid_rate=rate["succeeded"] / ended if ended else None,
                       invalid_rate=rate["invalid"] / ended if ended else None)
        names = sorted({r["name"] for r in rows})
        return console.render(request, "processors.html", rows=rows, names=names, window=RATES_WINDOW)

    def diff(request: Request):
        name = request.path_params["name"]
        versions = {r["version"]: r for r in store.processors.list() if r["name"] == name}
        if not versions:
            return console.error(request, 404, f"no processor {name}")
        ordered = list(versions)
        old = text_arg(request, "old") or (ordered[-2] if len(ordered) > 1 else ordered[0])
        new = text_arg(request, "new") or ordered[-1]
        if old not in versions or new not in versions:
            return console.error(request, 404, f"{name} has versions {', '.join(ordered)}")
        sections = diff_sections(versions[old]["definition"], versions[new]["definition"])
        return console.render(request, "diff.html", name=name, versions=ordered, old=old, new=new,
                              sections=sections, events=store.processors.events(name))

    def preview(request: Request):
        name, version = request.path_params["name"], request.path_params["version"]
        try:
            processor = load_catalog(store, sync=False)[(name, version)]
        except KeyError:
            return console.error(request, 404, f"no processor {name} {version}")
        sample_input = text_arg(request, "input", limit=20_000)
        sample_output = text_arg(request, "sample", limit=20_000)
        shown, problem = None, None
        if sample_input:
            try:
                job_input = json.loads(sample_input)
                if not isinstance(job_input, dict):
                    raise ValueError("the input must be a JSON object")
                shown = preview_request(processor, job_input, sample_output)
            except Exception as exc:  # bad JSON or an input the template cannot render: said on the page
                problem = str(exc)
        return console.render(request, "preview.html", name=name, version=version, processor=processor,
                              sample_input=sample_input or "{}", sample_output=sample_output or "",
                              shown=shown, problem=problem)

    return [Route("/processors", processors), Route("/processors/{name}/diff", diff),
            Route("/processors/{name}/{version}/preview", preview)]
