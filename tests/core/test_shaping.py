"""Batch shaping: batches stay within provider limits and never lose, duplicate or reorder a request."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forge_dagster.core.batch.shaping import (
    RequestTooLarge,
    custom_id_for,
    group_key,
    parse_custom_id,
    shape_batches,
    split_within_limits,
)
from forge_dagster.core.models import CUSTOM_ID_RE, LIMITS, Provider, ProviderRequest
from forge_dagster.core.platform.catalog import PACKAGE_PROCESSORS_DIR, load_processors
from forge_dagster.core.providers.requests import render_request
from forge_dagster.core.providers.wire import encoded_size

TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=60)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=10,
)
SHARED_SCHEMA = {"type": "object", "properties": {"label": {"type": "string", "description": "ünïcode"}}}
BODIES = st.dictionaries(
    st.sampled_from(["model", "messages", "max_tokens", "temperature", "system", "x"]), JSON
)


@st.composite
def request_lists(draw):
    bodies = draw(st.lists(BODIES, max_size=40))
    shared = draw(st.booleans())  # rendered requests share their structured-output objects
    return [
        ProviderRequest(f"j{i}a1", {**body, "response_format": SHARED_SCHEMA} if shared else body)
        for i, body in enumerate(bodies)
    ]


def sizes(provider: Provider, requests: list[ProviderRequest]) -> int:
    return sum(encoded_size(provider, r) for r in requests)


@settings(max_examples=120, deadline=None, database=None)
@given(
    provider=st.sampled_from(list(Provider)),
    requests=request_lists(),
    max_requests=st.none() | st.integers(1, 10),
    max_bytes=st.none() | st.integers(200, 3000),
)
def test_split_never_exceeds_limits_and_never_loses_duplicates_or_reorders(
    provider, requests, max_requests, max_bytes
):
    try:
        chunks = split_within_limits(provider, requests, max_requests=max_requests, max_bytes=max_bytes)
    except RequestTooLarge as exc:
        cap = max_bytes or LIMITS[provider].max_bytes
        too_big = [r.custom_id for r in requests if encoded_size(provider, r) > cap]
        assert exc.custom_ids == too_big and exc.custom_id == too_big[0]
        return
    assert [r for chunk in chunks for r in chunk] == requests
    for i, chunk in enumerate(chunks):
        assert chunk, "no empty batches"
        assert len(chunk) <= min(max_requests or LIMITS[provider].max_requests, LIMITS[provider].max_requests)
        assert sizes(provider, chunk) <= (max_bytes or LIMITS[provider].max_bytes)
        if i + 1 < len(chunks):  # greedy: a batch closes only when the next request would not fit
            nxt = chunks[i + 1][0]
            full = max_requests is not None and len(chunk) == max_requests
            assert full or sizes(provider, [*chunk, nxt]) > max_bytes


@settings(max_examples=50, deadline=None, database=None)
@given(requests=request_lists(), provider=st.sampled_from(list(Provider)))
def test_shaped_batch_total_bytes_is_what_the_wire_format_uploads(requests, provider):
    key = group_key(provider, "m", "p", "1.0.0")
    for batch in shape_batches([(key, r) for r in requests], max_bytes=10**9):
        assert batch.total_bytes == sizes(provider, batch.requests)


def test_openai_request_count_limit_splits_at_fifty_thousand():
    requests = [ProviderRequest(f"j{i}a0", {}) for i in range(50_001)]
    assert [len(c) for c in split_within_limits(Provider.OPENAI, requests)] == [50_000, 1]
    assert [len(c) for c in split_within_limits(Provider.ANTHROPIC, requests)] == [50_001]


def test_one_oversized_request_is_named_and_the_rest_can_still_be_shaped():
    small = [ProviderRequest(f"j{i}a1", {"t": "x" * 10}) for i in range(5)]
    big = ProviderRequest("j99a1", {"t": "x" * 5000})
    with pytest.raises(RequestTooLarge) as caught:
        split_within_limits(Provider.OPENAI, [*small[:2], big, *small[2:]], max_bytes=1000)
    assert caught.value.custom_ids == ["j99a1"] and caught.value.limit == 1000
    assert "j99a1" in str(caught.value)
    assert split_within_limits(Provider.OPENAI, small, max_bytes=1000) == [small]


def test_shape_batches_names_every_oversized_request_across_groups():
    a = group_key("openai", "gpt-4o-mini", "ticket_triage", "1.0.0")
    b = group_key("anthropic", "claude-3-5-haiku-latest", "review_sentiment", "1.0.0")
    items = [(a, ProviderRequest("j1a1", {"t": "x" * 900})), (b, ProviderRequest("j2a1", {"t": "y" * 900}))]
    with pytest.raises(RequestTooLarge) as caught:
        shape_batches([*items, (a, ProviderRequest("j3a1", {}))], max_bytes=500)
    assert caught.value.custom_ids == ["j1a1", "j2a1"]


def test_shape_batches_groups_by_provider_model_and_processor_version_in_first_seen_order():
    processors = load_processors(PACKAGE_PROCESSORS_DIR)
    triage, sentiment = processors["ticket_triage"], processors["review_sentiment"]
    k_triage = group_key(triage.provider, triage.model, triage.name, triage.version)
    k_triage_v2 = group_key(triage.provider, triage.model, triage.name, "2.0.0")
    k_sentiment = group_key(sentiment.provider, sentiment.model, sentiment.name, sentiment.version)
    items = []
    for job_id in range(9):
        key = [k_triage, k_sentiment, k_triage_v2][job_id % 3]
        processor = sentiment if key is k_sentiment else triage
        job_input = {"subject": "s", "body": "b", "review": "r"}
        items.append((key, render_request(processor, job_input, custom_id_for(job_id, 1))))
    batches = shape_batches(items, max_requests=2)
    assert [(b.key, [r.custom_id for r in b.requests]) for b in batches] == [
        (k_triage, ["j0a1", "j3a1"]),
        (k_triage, ["j6a1"]),
        (k_sentiment, ["j1a1", "j4a1"]),
        (k_sentiment, ["j7a1"]),
        (k_triage_v2, ["j2a1", "j5a1"]),
        (k_triage_v2, ["j8a1"]),
    ]
    spec = batches[2].to_spec("fb-1")
    assert (spec.provider, spec.model, spec.processor, spec.forge_batch_id) == (
        Provider.ANTHROPIC,
        "claude-3-5-haiku-latest",
        "review_sentiment",
        "fb-1",
    )


def test_duplicate_or_malformed_custom_ids_are_refused_before_any_batch_is_made():
    with pytest.raises(ValueError, match="duplicate custom_id 'j1a1'"):
        split_within_limits(Provider.OPENAI, [ProviderRequest("j1a1", {}), ProviderRequest("j1a1", {})])
    with pytest.raises(ValueError, match="does not match"):
        split_within_limits(Provider.OPENAI, [ProviderRequest("job 1", {})])
    key = group_key("openai", "m", "p", "1")
    with pytest.raises(ValueError, match="duplicate"):
        shape_batches(
            [
                (key, ProviderRequest("j1a1", {})),
                (group_key("openai", "m", "p", "2"), ProviderRequest("j1a1", {})),
            ]
        )


@pytest.mark.parametrize("cap", [{"max_requests": 0}, {"max_bytes": -1}, {"max_requests": True}])
def test_caps_must_be_positive_integers(cap):
    with pytest.raises(ValueError, match="positive integer"):
        split_within_limits(Provider.OPENAI, [], **cap)


@given(job_id=st.integers(0, 10**30), attempt=st.integers(0, 10**6))
@settings(database=None)
def test_custom_id_round_trips_and_is_provider_safe(job_id, attempt):
    cid = custom_id_for(job_id, attempt)
    assert CUSTOM_ID_RE.fullmatch(cid)
    assert parse_custom_id(cid) == (job_id, attempt)


@pytest.mark.parametrize(
    "foreign", ["", "j1", "j1a", "ja1", "j01a1", "j1a01", "x1a1", "j1a1b", "J1A1", "j-1a1", "j1a1\n"]
)
def test_parse_custom_id_refuses_ids_forge_did_not_make(foreign):
    with pytest.raises(ValueError, match="not a Forge custom_id"):
        parse_custom_id(foreign)


@pytest.mark.parametrize(("job_id", "attempt"), [(-1, 0), (1, -1), (True, 1), (1.0, 1), (10**70, 1)])
def test_custom_id_for_refuses_values_that_cannot_make_a_valid_id(job_id, attempt):
    with pytest.raises(ValueError):
        custom_id_for(job_id, attempt)
