"""The simulator's responses, embeddings and moderations endpoints, realtime and in batches, driven through the
official openai SDK; every answer and batch output body is validated strictly against the SDK's own types."""

from __future__ import annotations

import json

import openai
import pytest
from openai.types import CreateEmbeddingResponse, ModerationCreateResponse
from openai.types.responses import Response

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["label"],
          "properties": {"label": {"type": "string", "enum": ["spam", "ham"]}}}
FORMAT = {"format": {"type": "json_schema", "name": "label", "schema": SCHEMA, "strict": True}}
TYPES = {"/v1/responses": Response, "/v1/embeddings": CreateEmbeddingResponse,
         "/v1/moderations": ModerationCreateResponse}
BODIES = {
    "/v1/responses": {"model": "gpt-4o-mini", "input": "Is this spam?", "instructions": "Label it.",
                      "max_output_tokens": 200, "text": FORMAT},
    "/v1/embeddings": {"model": "text-embedding-3-small", "input": "a lamp", "dimensions": 64,
                       "encoding_format": "float"},
    "/v1/moderations": {"model": "omni-moderation-latest", "input": "have a nice day"},
}
ENDED = {"completed", "failed", "expired", "cancelled"}


def strict(kind, body: dict):
    """`body` validated strictly by the SDK type (missing required fields and wrong types are refused)."""
    return kind.model_validate(body, strict=True)


def test_a_response_carries_structured_output_and_usage_in_the_spec_shape(oai):
    raw = oai.responses.with_raw_response.create(**BODIES["/v1/responses"]).http_response.json()
    response = strict(Response, raw)
    assert response.status == "completed" and response.incomplete_details is None
    assert json.loads(response.output_text)["label"] in ("spam", "ham")
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert response.usage.input_tokens_details.cached_tokens == 0


def test_an_embedding_has_the_dimensions_asked_for_and_the_model_default_otherwise(oai):
    short = strict(CreateEmbeddingResponse, oai.embeddings.with_raw_response.create(
        **BODIES["/v1/embeddings"]).http_response.json())
    assert len(short.data[0].embedding) == 64 and short.usage.prompt_tokens > 0
    full = oai.embeddings.create(model="text-embedding-3-small", input=["one", "two"])
    assert [len(d.embedding) for d in full.data] == [1536, 1536] and [d.index for d in full.data] == [0, 1]
    again = oai.embeddings.create(model="text-embedding-3-small", input="a lamp", dimensions=64)
    assert again.data[0].embedding == short.data[0].embedding  # deterministic for a seed


def test_dimensions_on_a_model_that_does_not_take_them_and_an_empty_input_are_refused(oai):
    with pytest.raises(openai.BadRequestError, match="does not support specifying dimensions"):
        oai.embeddings.create(model="text-embedding-ada-002", input="x", dimensions=8)
    with pytest.raises(openai.BadRequestError):
        oai.embeddings.create(model="text-embedding-3-small", input="")


def test_a_moderation_result_has_flagged_every_category_and_scores(oai):
    raw = oai.moderations.with_raw_response.create(**BODIES["/v1/moderations"]).http_response.json()
    result = strict(ModerationCreateResponse, raw).results[0]
    categories = result.categories.model_dump(by_alias=True)
    assert len(categories) == 13 and result.flagged == any(categories.values())


def test_truncation_makes_an_incomplete_response_and_refusal_a_refusal_part(sim, oai):
    sim.configure(truncation_rate=1.0)
    raw = oai.responses.with_raw_response.create(**BODIES["/v1/responses"]).http_response.json()
    response = strict(Response, raw)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    sim.configure(truncation_rate=0.0, refusal_rate=1.0)
    refused = strict(Response, oai.responses.with_raw_response.create(**BODIES["/v1/responses"]).http_response.json())
    assert refused.output[0].content[0].type == "refusal"


def test_embedding_faults_give_a_wrong_length_or_a_malformed_vector(sim, oai, http):
    sim.configure(schema_violation_rate=1.0)
    wrong = oai.embeddings.create(**BODIES["/v1/embeddings"])
    assert len(wrong.data[0].embedding) == 32
    sim.configure(schema_violation_rate=0.0, malformed_rate=1.0)
    raw = oai.embeddings.with_raw_response.create(**BODIES["/v1/embeddings"]).http_response.json()
    assert raw["data"][0]["embedding"][0] == "NaN"
    with pytest.raises(ValueError):
        strict(CreateEmbeddingResponse, raw)


@pytest.mark.parametrize("url", sorted(TYPES))
def test_a_batch_on_each_endpoint_writes_output_lines_whose_bodies_are_the_sdk_type(sim, oai, wait_for, url):
    lines = [{"custom_id": f"r{i}", "method": "POST", "url": url, "body": BODIES[url]} for i in range(3)]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    uploaded = oai.files.create(file=("in.jsonl", data), purpose="batch")
    batch = oai.batches.create(input_file_id=uploaded.id, endpoint=url, completion_window="24h")
    sim.configure(batch_processing_s=0.0)
    done = wait_for(lambda: oai.batches.retrieve(batch.id), lambda b: b.status in ENDED)
    assert done.status == "completed" and done.request_counts.completed == 3 and done.endpoint == url
    out = [json.loads(line) for line in oai.files.content(done.output_file_id).text.splitlines()]
    assert sorted(line["custom_id"] for line in out) == ["r0", "r1", "r2"]
    for line in out:
        assert line["error"] is None and line["response"]["status_code"] == 200
        strict(TYPES[url], line["response"]["body"])
    if url == "/v1/moderations":
        assert done.usage.input_tokens == 0
    else:
        assert done.usage.input_tokens > 0


def test_a_batch_line_for_another_endpoint_fails_the_batch(sim, oai, wait_for):
    line = {"custom_id": "r0", "method": "POST", "url": "/v1/embeddings", "body": BODIES["/v1/embeddings"]}
    uploaded = oai.files.create(file=("in.jsonl", (json.dumps(line) + "\n").encode()), purpose="batch")
    batch = oai.batches.create(input_file_id=uploaded.id, endpoint="/v1/responses", completion_window="24h")
    done = wait_for(lambda: oai.batches.retrieve(batch.id), lambda b: b.status in ENDED)
    assert done.status == "failed" and done.errors.data[0].code == "mismatched_endpoint"
