"""Processors per endpoint: what is refused at load or per job (never sent), the bodies each endpoint
renders, the limits checked before submission, the verdicts per endpoint and the prices."""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
import pytest
from pydantic import ValidationError

from forge_dagster.core.models import BatchSpec, Provider, ProviderRequest, ResultItem, ResultOutcome, Usage
from forge_dagster.core.platform.catalog import PACKAGE_PROCESSORS_DIR, load_processors
from forge_dagster.core.platform.pricing import cost_usd
from forge_dagster.core.platform.processors import Processor, TemplateError, validate_input
from forge_dagster.core.platform.repair import Repair, with_repair
from forge_dagster.core.platform.validation import validate_result, vector_digest
from forge_dagster.core.providers.limits import BatchLimitError, check_limits
from forge_dagster.core.providers.requests import render_request
from forge_dagster.core.providers.results import openai_batch_item
from forge_dagster.core.providers.wire import openai_batch_line

EMBED = {"name": "emb", "version": "1.0.0", "provider": "openai", "model": "text-embedding-3-small",
         "endpoint": "embeddings", "template": "{text}"}
EXAMPLES = load_processors(PACKAGE_PROCESSORS_DIR)


def refusal(**fields) -> str:
    with pytest.raises(ValidationError) as caught:
        Processor(**fields)
    return str(caught.value)


def test_bad_endpoint_definitions_are_refused_at_load_with_the_reason():
    assert "model text-embedding-ada-002 does not take dimensions" in refusal(
        **{**EMBED, "model": "text-embedding-ada-002", "dimensions": 256})
    assert "takes no structured-output schema" in refusal(**EMBED, response_schema={"type": "object"})
    assert "takes no system" in refusal(**{**EMBED, "endpoint": "moderations", "model": "omni-moderation-latest"},
                                        system="be kind")
    assert "vector length of model my-embedder is not known" in refusal(**{**EMBED, "model": "my-embedder"})
    assert "only an embeddings processor takes dimensions" in refusal(
        **{**EMBED, "endpoint": "chat", "model": "gpt-4o-mini", "max_tokens": 10, "output_policy": "text"},
        dimensions=8)
    assert "is an OpenAI endpoint" in refusal(**{**EMBED, "provider": "anthropic"})
    assert "output_policy" in refusal(**EMBED, output_policy="text")


def test_defaults_keep_the_fingerprints_of_definitions_written_before_endpoints():
    triage = EXAMPLES["ticket_triage"]
    assert triage.endpoint == "chat" and "endpoint" not in triage.model_dump(exclude_defaults=True)
    assert triage.fingerprint == triage.model_copy(update={"endpoint": "chat"}).fingerprint
    assert EXAMPLES["product_embeddings"].vector_dimensions == 256


def test_each_endpoint_renders_its_own_body_and_batch_url():
    responses = render_request(EXAMPLES["ticket_triage_responses"], {"subject": "s", "body": "b"}, "j1a1")
    assert responses.endpoint == "responses" and openai_batch_line(responses)["url"] == "/v1/responses"
    body = responses.body
    assert body["input"].startswith("Subject: s") and body["instructions"].startswith("You triage")
    assert body["max_output_tokens"] == 300 and body["text"]["format"]["type"] == "json_schema"
    assert "messages" not in body and "max_tokens" not in body
    embed = render_request(EXAMPLES["product_embeddings"], {"title": "Lamp", "description": "LED"}, "j2a1")
    assert embed.body == {"model": "text-embedding-3-small", "input": "Lamp: LED", "encoding_format": "float",
                          "dimensions": 256}
    assert openai_batch_line(embed)["url"] == "/v1/embeddings"
    moderation = render_request(EXAMPLES["comment_moderation"], {"comment": "hi"}, "j3a1")
    assert moderation.body == {"model": "omni-moderation-latest", "input": "hi"}


def test_a_template_that_renders_an_empty_embedding_input_is_refused_per_job():
    processor = Processor(**EMBED)
    assert validate_input(processor, {"text": "  "}) == ["the template renders an empty embeddings input"]
    assert validate_input(processor, {"text": "lamp"}) == []
    with pytest.raises(TemplateError, match="renders an empty embeddings input"):
        render_request(processor, {"text": "   "}, "j1a1")


def test_a_repair_of_a_responses_answer_continues_its_input_and_embeddings_are_asked_again_unchanged():
    processor = EXAMPLES["ticket_triage_responses"]
    request = render_request(processor, {"subject": "s", "body": "b"}, "j1a2")
    repaired = with_repair(processor, request, Repair(1, "schema: bad", ("$.category: bad",), '{"category": 1}'))
    assert [m["role"] for m in repaired.body["input"]] == ["user", "assistant", "user"]
    embed = render_request(EXAMPLES["product_embeddings"], {"title": "t", "description": "d"}, "j2a2")
    assert with_repair(EXAMPLES["product_embeddings"], embed, Repair(1, "embedding", (), None)) is embed


def _embedding_batch(n: int, inputs_each: int = 1, model: str = "text-embedding-3-small") -> BatchSpec:
    requests = [ProviderRequest(f"j{i}a1", {"model": model, "input": ["x"] * inputs_each}, "embeddings")
                for i in range(n)]
    return BatchSpec("fb", Provider.OPENAI, "text-embedding-3-small", requests)


def test_limits_refuse_mixed_models_mixed_endpoints_and_too_many_embedding_inputs_before_submission():
    mixed = _embedding_batch(2)
    mixed.requests.append(ProviderRequest("j9a1", {"model": "text-embedding-3-large", "input": "x"}, "embeddings"))
    with pytest.raises(BatchLimitError) as caught:
        check_limits(mixed)
    assert caught.value.limit == "one_model"
    endpoints = _embedding_batch(2)
    endpoints.requests.append(ProviderRequest("j9a1", {"model": "text-embedding-3-small", "input": "x"},
                                              "moderations"))
    with pytest.raises(BatchLimitError) as caught:
        check_limits(endpoints)
    assert caught.value.limit == "one_endpoint"
    with pytest.raises(BatchLimitError) as caught:
        check_limits(_embedding_batch(25_001, inputs_each=2))
    assert caught.value.limit == "embedding_inputs"
    check_limits(_embedding_batch(25_000, inputs_each=2))  # exactly 50,000 inputs go


def _embedding_line(values) -> ResultItem:
    body = {"object": "list", "model": "text-embedding-3-small", "usage": {"prompt_tokens": 5, "total_tokens": 5},
            "data": [{"object": "embedding", "index": 0, "embedding": values}]}
    return openai_batch_item({"custom_id": "j1a1", "error": None, "response": {"status_code": 200, "body": body}})


def test_an_embedding_is_accepted_only_at_the_expected_length_with_finite_numbers():
    processor = EXAMPLES["product_embeddings"]
    good = _embedding_line([0.5] * 256)
    verdict = validate_result(good, processor)
    assert verdict.accepted and np.frombuffer(verdict.vector, "<f4").tolist() == [0.5] * 256
    assert verdict.output == {"dimensions": 256, "vector_sha256": vector_digest(verdict.vector)}
    assert good.usage == Usage(input_tokens=5) and "floats" in str(good.raw)
    assert validate_result(_embedding_line([0.5] * 255), processor).reason == "embedding: 255 numbers, expected 256"
    overflow = validate_result(_embedding_line([0.5] * 255 + [1e39]), processor)
    assert not overflow.accepted and "not finite" in overflow.reason
    assert not validate_result(_embedding_line([0.5] * 255 + [math.nan]), processor).accepted
    malformed = validate_result(_embedding_line([0.5] * 255 + ["x"]), processor)
    assert malformed.reason == "embedding: the answer holds no list of numbers" and malformed.retryable


def _response_item(status: str, content: list, details=None) -> ResultItem:
    body = {"object": "response", "status": status, "incomplete_details": details,
            "output": [{"type": "message", "role": "assistant", "content": content}],
            "usage": {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 4}, "output_tokens": 7,
                      "output_tokens_details": {"reasoning_tokens": 2}}}
    return openai_batch_item({"custom_id": "j1a1", "error": None, "response": {"status_code": 200, "body": body}})


def test_responses_answers_are_judged_like_chat_from_the_responses_shapes():
    processor = EXAMPLES["ticket_triage_responses"]
    answer = '{"category": "bug", "priority": "high", "summary": "Export is broken."}'
    ok = _response_item("completed", [{"type": "output_text", "text": answer}])
    assert validate_result(ok, processor).accepted
    assert ok.usage == Usage(input_tokens=10, output_tokens=7, cached_input_tokens=4, reasoning_tokens=2)
    cut = validate_result(_response_item("incomplete", [{"type": "output_text", "text": answer[:9]}],
                                         {"reason": "max_output_tokens"}), processor)
    assert cut.reason == "truncated: length" and cut.retryable
    refused = validate_result(_response_item("completed", [{"type": "refusal", "refusal": "no"}]), processor)
    assert refused.reason == "refusal" and not refused.retryable
    filtered = _response_item("incomplete", [], {"reason": "content_filter"})
    assert validate_result(filtered, processor).reason == "refusal"
    bad = validate_result(_response_item("completed", [{"type": "output_text", "text": '{"category": 1}'}]),
                          processor)
    assert bad.reason.startswith("schema")


def test_a_moderation_is_accepted_only_as_a_well_formed_result():
    processor = EXAMPLES["comment_moderation"]
    result = {"flagged": False, "categories": {"hate": False, "illicit": None}, "category_scores": {"hate": 0.01}}
    ok = validate_result(ResultItem("j1a1", ResultOutcome.SUCCEEDED, 200, tool_input=result, stop_reason="stop"),
                         processor)
    assert ok.accepted and ok.output == result
    bad = {**result, "category_scores": {"hate": "high"}}
    verdict = validate_result(ResultItem("j1a1", ResultOutcome.SUCCEEDED, 200, tool_input=bad), processor)
    assert not verdict.accepted and "category_scores" in verdict.reason


def test_embeddings_are_priced_per_input_token_with_the_batch_discount_and_moderations_are_free():
    usage = Usage(input_tokens=1_000_000)
    assert cost_usd("openai", "text-embedding-3-small", usage, batch=False) == Decimal("0.02")
    assert cost_usd("openai", "text-embedding-3-small", usage, batch=True) == Decimal("0.01")
    assert cost_usd("openai", "text-embedding-3-large", usage, batch=True) == Decimal("0.065")
    assert cost_usd("openai", "omni-moderation-latest", usage, batch=False) == 0
