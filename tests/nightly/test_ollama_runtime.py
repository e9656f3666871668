"""The local model through the official ollama client, against the simulator's Ollama API."""

from __future__ import annotations

import socket

import pytest

from forge_dagster.core.nightly.ollama import OllamaRuntime, OllamaUnavailable
from forge_dagster.core.nightly.triage import THREAT_SCHEMA
from tests.nightly.conftest import MODEL


def test_warm_up_loads_the_configured_model(sim):
    runtime = OllamaRuntime(sim.ollama_host, MODEL)
    assert runtime.loaded_models() == []
    assert runtime.warm_up() == [MODEL]
    assert runtime.has_model() and not runtime.has_model("nope:1b")


def test_unload_all_leaves_no_model_loaded_and_says_which_it_unloaded(sim):
    runtime = OllamaRuntime(sim.ollama_host, MODEL)
    runtime.warm_up()
    OllamaRuntime(sim.ollama_host, "qwen2.5:7b-instruct").warm_up()
    assert sorted(runtime.unload_all()) == ["llama3.2:3b", "qwen2.5:7b-instruct"]
    assert runtime.loaded_models() == []
    # Checked with /api/ps after the keep_alive 0 requests.
    paths = [r["path"] for r in sim.requests()]
    assert paths[-1] == "/api/ps" and paths.count("/api/generate") == 4


def test_generate_json_returns_an_object_that_satisfies_the_schema(sim):
    import jsonschema

    value, gen = OllamaRuntime(sim.ollama_host, MODEL).generate_json("Disk is 97% full.", THREAT_SCHEMA)
    jsonschema.validate(value, THREAT_SCHEMA)
    assert gen.output_tokens > 0 and gen.input_tokens > 0


def test_ollama_down_is_reported_as_unavailable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(OllamaUnavailable, match="Failed to connect to Ollama"):
        OllamaRuntime(f"http://127.0.0.1:{port}", MODEL, timeout_s=5).available_models()
