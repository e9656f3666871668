"""Provider-neutral answer generation: what the simulated model "says" and which content faults hit it.

Content is fixed by (seed, request fingerprint). Content faults (refusal, schema violation, malformed JSON,
truncation) are rolled from (seed, kind, fingerprint, occurrence) so a resubmitted request gets a new roll.
The OpenAI, Anthropic and Ollama formatters turn a `Generation` into their own wire shape.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from forge_dagster.simulator.config import SimConfig
from forge_dagster.simulator.dice import Dice, rng
from forge_dagster.simulator.schemas import WORDS, satisfying, violating

REFUSAL_TEXT = "I'm sorry, but I can't help with that request."
_REASONING_MODEL = re.compile(r"^(o\d|gpt-5)")


def estimate_tokens(text: str) -> int:
    """About four characters a token, at least one."""
    return max(1, math.ceil(len(text) / 4))


@dataclass(frozen=True)
class OutputSpec:
    """What the request asks for: free text, any JSON object, JSON under a schema, or a tool call."""

    mode: str = "text"  # text | json | schema | tool
    schema: dict[str, Any] | None = None
    tool_name: str | None = None


@dataclass
class Generation:
    """One simulated answer. `text` is the serialized output (the tool input JSON in tool mode)."""

    text: str | None
    stop: str  # stop | length | refusal | tool
    input_tokens: int
    output_tokens: int
    spec: OutputSpec = field(default_factory=OutputSpec)
    refusal: str | None = None
    reasoning_tokens: int = 0
    faults: list[str] = field(default_factory=list)

    def parsed(self) -> Any:
        """The output as JSON, or None if it does not parse."""
        try:
            return json.loads(self.text or "")
        except ValueError:
            return None


def _text_answer(seed: int, fp: str) -> str:
    r = rng(seed, "text", fp)
    body = " ".join(r.choice(WORDS) for _ in range(r.randint(12, 48)))
    return f"Simulated answer {fp[:8]}: {body}."


def _fit(text: str, budget: int | None) -> str:
    """Free text is written to fit the token budget (a real model would stop on its own); JSON is not."""
    if budget is None or estimate_tokens(text) <= budget:
        return text
    words, out = text.split(), ""
    for word in words:
        if estimate_tokens(f"{out} {word}.") > budget:
            break
        out = f"{out} {word}" if out else word
    return (out.rstrip(".:") + ".") if out else text[: max(1, budget * 4)]


def _malform(text: str) -> str:
    broken = "Here is the JSON you asked for:\n" + text[: max(1, len(text) - 1)]
    try:
        json.loads(broken)
    except ValueError:
        return broken
    return broken + " {"


def generate(
    dice: Dice,
    cfg: SimConfig,
    fp: str,
    occurrence: int,
    spec: OutputSpec,
    input_text: str,
    max_tokens: int | None,
    model: str,
) -> Generation:
    """The deterministic answer to one request, with the content faults the config and dice choose."""
    seed = dice.seed
    input_tokens = estimate_tokens(input_text)
    reasoning = rng(seed, "reasoning", fp).randint(16, 256) if _REASONING_MODEL.match(model or "") else 0
    if max_tokens is not None:
        reasoning = min(reasoning, max_tokens // 2)
    about = (fp, occurrence)
    if dice.hit("refusal", cfg.refusal_rate, *about):
        return Generation(None, "refusal", input_tokens, estimate_tokens(REFUSAL_TEXT) + reasoning, spec,
                          refusal=REFUSAL_TEXT, reasoning_tokens=reasoning, faults=["refusal"])
    faults: list[str] = []
    if spec.mode in ("schema", "tool") and spec.schema is not None:
        value: Any = satisfying(spec.schema, seed, fp)
        if dice.hit("schema_violation", cfg.schema_violation_rate, *about):
            value = violating(spec.schema, value)
            faults.append("schema_violation")
        text = json.dumps(value, ensure_ascii=False)
    elif spec.mode in ("json", "tool"):
        text = json.dumps({"answer": _text_answer(seed, fp)})
    else:
        text = _fit(_text_answer(seed, fp), None if max_tokens is None else max_tokens - reasoning)
    if dice.hit("malformed", cfg.malformed_rate, *about):
        text = _malform(text)
        faults.append("malformed")
    stop = "tool" if spec.mode == "tool" else "stop"
    if dice.hit("truncation", cfg.truncation_rate, *about):
        text = text[: max(1, len(text) // 2)]
        stop = "length"
        faults.append("truncation")
    if max_tokens is not None and estimate_tokens(text) + reasoning > max_tokens:
        text = text[: max(0, (max_tokens - reasoning) * 4)]
        stop = "length"
        faults.append("max_tokens")
    return Generation(text, stop, input_tokens, estimate_tokens(text) + reasoning, spec,
                      reasoning_tokens=reasoning, faults=faults)


def content_text(content: Any) -> str:
    """The text of a message `content` (a string or a list of typed parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict):
                parts.append(str(part.get("text") or part.get("content") or ""))
            else:
                parts.append(str(part))
        return "\n".join(parts)
    return "" if content is None else str(content)
