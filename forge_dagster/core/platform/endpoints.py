"""What each provider endpoint takes and gives back: which processor fields fit it, the vector length of
an embedding model, and the fixed output shape of the endpoints whose answer is not the processor's schema
(an embedding, a moderation result)."""

from __future__ import annotations

from typing import Any

from forge_dagster.core.models import Provider

CHAT_ENDPOINTS = frozenset({"chat", "messages", "responses"})  # a model writes an answer under a policy
# The vector length each embedding model returns when no `dimensions` is asked for.
EMBEDDING_DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072,
                        "text-embedding-ada-002": 1536}
_DIMENSIONS_PREFIX = "text-embedding-3"  # `dimensions` is taken by text-embedding-3 models only
MODERATION_CATEGORIES = ("harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
                         "illicit/violent", "self-harm", "self-harm/instructions", "self-harm/intent", "sexual",
                         "sexual/minors", "violence", "violence/graphic")
_FIXED_OUTPUT_FIELDS = ("response_schema", "system", "max_tokens", "temperature")


def takes_dimensions(model: str) -> bool:
    """True when the embedding model accepts a `dimensions` parameter."""
    return model.startswith(_DIMENSIONS_PREFIX)


def expected_dimensions(model: str, dimensions: int | None) -> int | None:
    """The vector length an embedding of `model` must have (None: not known)."""
    return dimensions if dimensions is not None else EMBEDDING_DIMENSIONS.get(model)


def endpoint_problems(fields: dict[str, Any]) -> list[str]:
    """Why a processor's fields do not fit its endpoint (empty: they fit). `fields` are the processor's
    own: provider, model, endpoint, dimensions, output_policy and the fixed-output fields."""
    endpoint, provider, model = fields["endpoint"], fields["provider"], fields["model"] or ""
    problems = []
    if provider == Provider.ANTHROPIC and endpoint not in ("chat", "messages"):
        problems.append(f"endpoint {endpoint} is an OpenAI endpoint; anthropic takes chat (messages)")
    if provider == Provider.OPENAI and endpoint == "messages":
        problems.append("endpoint messages is Anthropic's; openai takes chat, responses, embeddings or moderations")
    if fields["dimensions"] is not None:
        if endpoint != "embeddings":
            problems.append(f"dimensions: only an embeddings processor takes dimensions, not {endpoint}")
        elif not takes_dimensions(model):
            problems.append(f"dimensions: model {model} does not take dimensions (only {_DIMENSIONS_PREFIX} "
                            "models do)")
    if endpoint in CHAT_ENDPOINTS:
        return problems
    for name in _FIXED_OUTPUT_FIELDS:
        if fields[name] not in (None, ""):
            why = "structured-output schema" if name == "response_schema" else name
            problems.append(f"{name}: an {endpoint} processor takes no {why} (its output is fixed by the API)")
    if fields["output_policy"] != "json":
        problems.append(f"output_policy: an {endpoint} processor has no output policy (its output is fixed)")
    if endpoint == "embeddings" and expected_dimensions(model, fields["dimensions"]) is None:
        problems.append(f"dimensions: the vector length of model {model} is not known; state dimensions")
    return problems


def fixed_output_schema(endpoint: str) -> dict[str, Any] | None:
    """The shape of an embeddings or moderations output as Forge stores it (None for chat endpoints)."""
    if endpoint == "embeddings":
        return {"type": "object", "properties": {
            "embedding": {"type": "array", "items": {"type": "number"}, "x-forge-vector": True},
            "dimensions": {"type": "integer"}, "vector_sha256": {"type": "string"}}}
    if endpoint == "moderations":
        flags = {c: {"type": "boolean"} for c in MODERATION_CATEGORIES}
        scores = {c: {"type": "number"} for c in MODERATION_CATEGORIES}
        return {"type": "object", "properties": {
            "flagged": {"type": "boolean"},
            "categories": {"type": "object", "properties": flags},
            "category_scores": {"type": "object", "properties": scores}}}
    return None
