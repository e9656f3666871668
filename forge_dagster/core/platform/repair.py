"""Repair prompts: an answer that failed validation is asked again with the validator's errors.

The repair turn is added to the processor's own request: the rejected answer as the assistant's turn,
then a user turn with the errors and what a valid answer looks like. A truncated answer is not quoted
(it was cut off); the model is asked to answer within the token limit instead. How many repairs a job
gets is the processor's `max_repair_attempts` (collection counts the job's answered attempts).

Everything a repair needs is re-derived from what the store keeps: the job's latest answered result
line is validated again against the job's pinned processor, which gives back the validator's errors.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from forge_dagster.core.models import ProviderRequest, ResultItem, ResultOutcome, Usage
from forge_dagster.core.platform.catalog import ProcessorCatalog
from forge_dagster.core.platform.processors import Processor
from forge_dagster.core.platform.validation import Verdict, validate_result
from forge_dagster.core.providers.requests import render_request

MAX_QUOTED_CHARS = 4000  # a longer rejected answer is quoted up to here
MAX_LISTED_ERRORS = 20


@dataclass(frozen=True)
class Repair:
    """Why an earlier answer of a job was rejected, and that answer (None when not worth quoting)."""

    attempt: int
    reason: str
    errors: tuple[str, ...]
    previous_output: str | None
    truncated: bool = False


def answer_text(item: ResultItem) -> str | None:
    """The answer as the model gave it: its text, or its tool input as JSON."""
    if item.tool_input is not None:
        return json.dumps(item.tool_input, ensure_ascii=False, sort_keys=True)
    return item.text


def repair_for(processor: Processor, item: ResultItem, attempt: int) -> Repair | None:
    """The repair for a rejected answer, or None when validation accepts it or a retry cannot help."""
    return repair_from_verdict(item, validate_result(item, processor), attempt)


def repair_from_verdict(item: ResultItem, verdict: Verdict, attempt: int) -> Repair | None:
    """`repair_for` when the answer's verdict is already known (the realtime path validates first)."""
    if verdict.accepted or not verdict.retryable or item.outcome is not ResultOutcome.SUCCEEDED:
        return None
    truncated = verdict.reason.startswith("truncated")
    text = None if truncated else answer_text(item)
    if text is not None and len(text) > MAX_QUOTED_CHARS:
        text = text[:MAX_QUOTED_CHARS] + " [...]"
    return Repair(attempt, verdict.reason, tuple(verdict.errors), text or None, truncated)


_POLICY_ASK = {
    "json": "Reply again with only the corrected JSON object, matching the response schema exactly.",
    "json_in_text": "Reply again with exactly one corrected JSON object matching the JSON Schema, in a "
                    "```json fenced block.",
    "text": "Reply again with a corrected answer that meets these requirements.",
}


def repair_instruction(processor: Processor, repair: Repair) -> str:
    """The user turn that asks for a corrected answer."""
    if repair.truncated:
        return (f"Your previous answer was cut off at the {processor.max_tokens}-token limit before it was "
                "complete. Answer again, more concisely, so that the whole answer fits. "
                + _POLICY_ASK[processor.output_policy])
    errors = list(repair.errors[:MAX_LISTED_ERRORS]) or [repair.reason]
    more = len(repair.errors) - MAX_LISTED_ERRORS
    lines = [f"- {e}" for e in errors] + ([f"- ... and {more} more"] if more > 0 else [])
    return ("Your previous answer was rejected by the validator:\n" + "\n".join(lines) + "\n"
            + _POLICY_ASK[processor.output_policy])


def with_repair(processor: Processor, request: ProviderRequest, repair: Repair | None) -> ProviderRequest:
    """`request` (as the processor rendered it) with the repair turns appended; unchanged when None, and
    for embeddings and moderations (nothing to correct: the same request is asked again). The rendered
    body is shared and read-only, so a new body and messages list are built."""
    if repair is None or processor.fixed_output:
        return request
    body = dict(request.body)
    if processor.endpoint == "responses":  # the input becomes a conversation of message items
        body["input"] = _repair_turns([{"role": "user", "content": body["input"]}], processor, repair)
        return ProviderRequest(request.custom_id, body, request.endpoint)
    body["messages"] = _repair_turns(list(body["messages"]), processor, repair)
    return ProviderRequest(request.custom_id, body, request.endpoint)


def _repair_turns(messages: list[dict[str, Any]], processor: Processor, repair: Repair) -> list[dict[str, Any]]:
    instruction = repair_instruction(processor, repair)
    if repair.previous_output:
        messages += [{"role": "assistant", "content": repair.previous_output},
                     {"role": "user", "content": instruction}]
    else:  # nothing to quote: the instruction joins the user's turn (roles keep alternating)
        last = messages[-1]
        messages[-1] = {**last, "content": f"{last['content']}\n\n{instruction}"}
    return messages


def render_job_request(
    processor: Processor, payload: Mapping[str, Any], custom_id: str, repair: Repair | None = None
) -> ProviderRequest:
    """The provider request for one job attempt: the processor's request, plus the repair turn when
    the job's previous answer was rejected."""
    return with_repair(processor, render_request(processor, payload, custom_id), repair)


def _item(row: Mapping[str, Any]) -> ResultItem:
    return ResultItem(custom_id=row["custom_id"], outcome=ResultOutcome(row["outcome"]),
                      status_code=row["status_code"], text=row["text"], tool_input=row["tool_input"],
                      stop_reason=row["stop_reason"], usage=Usage(**(row["usage"] or {})))


def repairs_for(store, catalog: ProcessorCatalog, jobs: Iterable[tuple[int, int, str, str | None]]) -> dict[int, Repair]:
    """Repairs for (job id, attempt, processor name, pinned version) of jobs on a later attempt whose
    latest earlier answer was rejected; jobs without one are absent from the result."""
    wanted = {job_id: (attempt, name, version) for job_id, attempt, name, version in jobs if attempt > 1}
    if not wanted:
        return {}
    repairs = {}
    for row in store.processors.last_answers([(j, a) for j, (a, _, _) in wanted.items()]):
        _, name, version = wanted[row["job_id"]]
        try:
            processor = catalog.get_version(name, version)
        except KeyError:
            continue  # the builder fails the job for its unknown processor
        if processor.max_repair_attempts == 0:
            continue
        repair = repair_for(processor, _item(row), row["attempt"])
        if repair is not None:
            repairs[row["job_id"]] = repair
    return repairs


def limit_repairs(store, processor: Processor, settlements: list) -> list:
    """Settlements of a validated batch with the repair bound applied: a rejected answer is retried
    only while the job has had at most `max_repair_attempts` repairs (answers after its first);
    past that the job ends invalid. Other settlements pass through unchanged."""
    rejected = [s.job_id for s in settlements if s.kind == "retry" and s.exhausted == "invalid"]
    if not rejected:
        return settlements
    answers = store.processors.answer_counts(rejected)
    bound = processor.max_repair_attempts
    out = []
    for s in settlements:
        if s.kind == "retry" and s.exhausted == "invalid" and answers.get(s.job_id, 1) > bound:
            s = replace(s, kind="invalid", reason=f"repair attempts ({bound}) exhausted; last: {s.reason}")
        out.append(s)
    return out
