"""The simulator's Ollama surface, driven through ollama.Client."""

from __future__ import annotations

import ollama
import pytest

MODEL = "llama3.2:3b"


def _loaded(client: ollama.Client) -> list[str]:
    return [m.model for m in client.ps().models]


def test_empty_generate_loads_the_model_and_keep_alive_zero_unloads_it(olla):
    assert _loaded(olla) == []
    loaded = olla.generate(model=MODEL, prompt="")
    assert loaded.done and loaded.done_reason == "load"
    assert _loaded(olla) == [MODEL]
    unloaded = olla.generate(model=MODEL, prompt="", keep_alive=0)
    assert unloaded.done_reason == "unload"
    assert _loaded(olla) == []


def test_chat_answers_and_keeps_the_model_loaded_for_keep_alive(olla):
    reply = olla.chat(model=MODEL, messages=[{"role": "user", "content": "hello"}], keep_alive="10m")
    assert reply.message.role == "assistant" and reply.message.content
    assert reply.eval_count > 0 and reply.prompt_eval_count > 0
    [running] = olla.ps().models
    assert running.model == MODEL and running.expires_at is not None
    olla.chat(model=MODEL, messages=[{"role": "user", "content": "bye"}], keep_alive=0)
    assert _loaded(olla) == []


def test_streaming_chat_yields_chunks_ending_with_done(olla):
    chunks = list(olla.chat(model=MODEL, messages=[{"role": "user", "content": "stream"}], stream=True))
    whole = olla.chat(model=MODEL, messages=[{"role": "user", "content": "stream"}])
    assert chunks[-1].done and not any(c.done for c in chunks[:-1])
    assert "".join(c.message.content for c in chunks) == whole.message.content


def test_tags_show_and_unknown_models(olla):
    names = [m.model for m in olla.list().models]
    assert MODEL in names
    shown = olla.show(MODEL)
    assert shown.details.family == "llama" and "completion" in shown.capabilities
    with pytest.raises(ollama.ResponseError) as err:
        olla.chat(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 404


def test_embeddings_are_deterministic_unit_vectors(olla):
    first = olla.embed(model="nomic-embed-text", input=["alpha", "beta"]).embeddings
    again = olla.embed(model="nomic-embed-text", input=["alpha"]).embeddings
    assert first[0] == again[0] and first[0] != first[1]
    assert abs(sum(v * v for v in first[0]) - 1.0) < 1e-3
