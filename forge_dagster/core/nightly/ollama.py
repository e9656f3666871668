"""The local model through the official `ollama` client: warm-up, generation, and handing the GPU back.

`OLLAMA_HOST` points at a real Ollama; with nothing set Forge points this at the local simulator (a test
double). Unloading sends `keep_alive: 0` for every model `/api/ps` lists, then checks `/api/ps` again
until it is empty, so a training job never starts while a model still holds GPU memory.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import ollama

DEFAULT_MODEL = "llama3.2:3b"


class OllamaUnavailable(Exception):
    """Ollama did not answer (not running, wrong host) or refused the request."""


class UnloadIncomplete(Exception):
    """Models were still loaded after the unload deadline."""


@dataclass(frozen=True)
class Generation:
    """One answer of the local model, with its token counts."""

    model: str
    text: str
    input_tokens: int
    output_tokens: int
    done_reason: str | None

    def usage(self) -> dict[str, int]:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}


class OllamaRuntime:
    """One Ollama server and the model Forge uses on it."""

    def __init__(self, host: str, model: str = DEFAULT_MODEL, *, timeout_s: float = 120.0,
                 keep_alive: str = "30m") -> None:
        self.host, self.model, self.keep_alive = host, model, keep_alive
        self.client = ollama.Client(host=host, timeout=timeout_s)

    def close(self) -> None:
        """Close the HTTP client."""
        self.client.close()

    def _call(self, fn, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConnectionError as exc:  # what the client raises when nothing answers at `host`
            raise OllamaUnavailable(f"Ollama at {self.host}: {exc}") from exc
        except ollama.ResponseError as exc:
            raise OllamaUnavailable(f"Ollama at {self.host} answered {exc.status_code}: {exc.error}") from exc

    def available_models(self) -> list[str]:
        """Models installed on the server (`/api/tags`); raises OllamaUnavailable when it is down."""
        return [m.model for m in self._call(self.client.list).models if m.model]

    def loaded_models(self) -> list[str]:
        """Models loaded in memory now (`/api/ps`)."""
        return sorted(m.model for m in self._call(self.client.ps).models if m.model)

    def has_model(self, name: str | None = None) -> bool:
        """Whether `name` (default: the configured model) is installed; `llama3` matches `llama3:latest`."""
        wanted = name or self.model
        names = set(self.available_models())
        return wanted in names or f"{wanted}:latest" in names

    def warm_up(self) -> list[str]:
        """Load the configured model (an empty prompt loads it) and return what `/api/ps` lists after."""
        self._call(self.client.generate, model=self.model, prompt="", keep_alive=self.keep_alive)
        return self.loaded_models()

    def generate(self, prompt: str, *, system: str | None = None, schema: dict[str, Any] | None = None,
                 max_tokens: int | None = None) -> Generation:
        """One chat turn with the configured model; `schema` asks for JSON that satisfies it."""
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        options = {"num_predict": max_tokens} if max_tokens else None
        response = self._call(self.client.chat, model=self.model, messages=messages, format=schema,
                              options=options, keep_alive=self.keep_alive, stream=False)
        return Generation(
            model=response.model or self.model,
            text=response.message.content or "",
            input_tokens=int(response.prompt_eval_count or 0),
            output_tokens=int(response.eval_count or 0),
            done_reason=response.done_reason,
        )

    def generate_json(self, prompt: str, schema: dict[str, Any], *, system: str | None = None,
                      max_tokens: int | None = None) -> tuple[dict[str, Any], Generation]:
        """A JSON object satisfying `schema` (format-constrained); raises ValueError if it does not parse."""
        gen = self.generate(prompt, system=system, schema=schema, max_tokens=max_tokens)
        try:
            value = json.loads(gen.text)
        except ValueError as exc:
            raise ValueError(f"the local model returned no JSON ({gen.done_reason}): {gen.text[:200]!r}") from exc
        if not isinstance(value, dict):
            raise ValueError(f"the local model returned {type(value).__name__}, not an object")
        return value, gen

    def unload_all(self, *, deadline_s: float = 30.0, check_every_s: float = 0.2) -> list[str]:
        """Unload every loaded model (`keep_alive: 0`) and wait until `/api/ps` lists none.
        Returns the models that were unloaded; raises UnloadIncomplete after `deadline_s`."""
        unloaded: list[str] = []
        deadline = time.monotonic() + deadline_s
        while True:
            loaded = self.loaded_models()
            if not loaded:
                return unloaded
            if time.monotonic() > deadline:
                raise UnloadIncomplete(f"still loaded after {deadline_s}s: {', '.join(loaded)}")
            for model in loaded:
                self._call(self.client.generate, model=model, prompt="", keep_alive=0)
                if model not in unloaded:
                    unloaded.append(model)
            if self.loaded_models():
                time.sleep(check_every_s)  # a real server frees memory asynchronously
