"""Processors: named, versioned LLM task definitions loaded from YAML, and the provider requests they render.

A processor pins everything that decides what a job asks and what counts as a valid answer: provider, model,
prompts, the response JSON Schema and the output policy. Jobs name a processor (and version), never a prompt.
A non-LLM step names a `handler` (module:function) instead of a model: its jobs run in mode `handler`, only
under `forge work --handler` for that handler, and what it returns is validated like a provider's answer.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import jinja2
import jinja2.meta
from jinja2.sandbox import SandboxedEnvironment
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from forge_dagster.core.models import ENDPOINTS, Provider
from forge_dagster.core.platform.endpoints import (
    CHAT_ENDPOINTS,
    endpoint_problems,
    expected_dimensions,
    fixed_output_schema,
)

_SEMVER_RE = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
_PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\}")
_UNDEFINED_RE = re.compile(r"'([^']+)' is undefined|has no attribute '([^']+)'")
_JINJA = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
_T = TypeVar("_T")
HANDLER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")
_LLM_FIELDS = ("provider", "model", "template", "max_tokens")
_FIXED_OUTPUT_FIELDS = ("provider", "model", "template")  # embeddings and moderations have no max_tokens
Endpoint = Literal[ENDPOINTS]


class ProcessorError(ValueError):
    """A processor definition is unusable; the message names the file and the field."""

    def __init__(self, path: str | Path | None, field: str, message: str) -> None:
        where = f"{path}: " if path is not None else ""
        text = message if message.startswith(f"{field}:") else f"{field}: {message}"
        super().__init__(f"{where}{text}")
        self.path = str(path) if path is not None else None
        self.field = field


class TemplateError(ValueError):
    """A job input cannot fill the processor's template (the caller fails that job)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def is_jinja(template: str) -> bool:
    """True when the template is Jinja (`{{ x }}` or `{% ... %}`) rather than simple `{field}` placeholders."""
    return "{{" in template or "{%" in template


@functools.lru_cache(maxsize=256)
def _compile_jinja(template: str) -> jinja2.Template:
    return _JINJA.from_string(template)


def _template_fields(template: str) -> tuple[str, ...]:
    if is_jinja(template):
        return tuple(sorted(jinja2.meta.find_undeclared_variables(_JINJA.parse(template))))
    return tuple(dict.fromkeys(m.group(1) for m in _PLACEHOLDER_RE.finditer(template)))


def _lookup(job_input: Mapping[str, Any], dotted: str) -> Any:
    value: Any = job_input
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise TemplateError(dotted, f"missing template field {dotted!r}")
        value = value[part]
    return value


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)


def render_template(template: str, job_input: Any) -> str:
    """Fill `template` from `job_input`; a missing field raises TemplateError naming it."""
    if not isinstance(job_input, Mapping):
        raise TemplateError("", f"job input must be a JSON object, got {type(job_input).__name__}")
    if not is_jinja(template):
        return _PLACEHOLDER_RE.sub(lambda m: _as_text(_lookup(job_input, m.group(1))), template)
    try:
        return _compile_jinja(template).render(**job_input)
    except jinja2.UndefinedError as exc:
        match = _UNDEFINED_RE.search(str(exc))
        name = next((g for g in match.groups() if g), "") if match else ""
        raise TemplateError(name, f"missing template field {name!r}") from exc
    except (jinja2.TemplateError, TypeError, ValueError, ArithmeticError) as exc:
        raise TemplateError("", f"template failed to render: {exc}") from exc


def _semver_key(version: str) -> tuple[Any, ...]:
    match = _SEMVER_RE.fullmatch(version)
    assert match is not None
    major, minor, patch, pre, _build = match.groups()
    pre_key = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split(".")) if pre else ()
    return (int(major), int(minor), int(patch), 0 if pre else 1, pre_key)


class CacheSpec(BaseModel):
    """`cache: {ttl: 5m | 1h}`: mark the processor's shared prefix (system prompt, tool definitions) for
    the provider's prompt cache (Anthropic `cache_control`; OpenAI `prompt_cache_key`, whose own cache
    decides its lifetime)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ttl: Literal["5m", "1h"] = "5m"


class Processor(BaseModel):
    """One processor definition. Build with `load_processor_file` (or directly, for tests and the API)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: StrictStr = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    version: StrictStr
    # provider, model, template and max_tokens are required unless the processor names a handler.
    provider: Provider | None = None
    model: StrictStr | None = Field(default=None, min_length=1)
    mode: Literal["batch", "realtime", "auto", "handler"] = "batch"
    description: StrictStr = ""
    system: StrictStr = ""
    template: StrictStr | None = Field(default=None, min_length=1)
    response_schema: dict[str, Any] | None = None
    max_tokens: StrictInt | None = Field(default=None, gt=0)
    temperature: StrictFloat | None = Field(default=None, ge=0, le=2)
    output_policy: Literal["json", "json_in_text", "text"] = "json"
    max_attempts: StrictInt = Field(default=3, ge=1, le=20)
    # Answers that fail validation are asked again with the validator's errors, at most this many times.
    max_repair_attempts: StrictInt = Field(default=2, ge=0, le=10)
    tags: tuple[Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_.:-]{1,40}$")], ...] = ()
    # Realtime routing: provider key aliases to use, first choice first (empty: every key of the provider).
    keys: tuple[StrictStr, ...] = ()
    # A non-LLM step: `package.module:function`, called with each claimed job by `forge work --handler`.
    handler: StrictStr | None = Field(default=None, pattern=HANDLER_RE.pattern)
    # The provider API: chat (default: OpenAI chat.completions, Anthropic messages), responses, embeddings
    # or moderations (OpenAI). `dimensions` asks a text-embedding-3 model for a shorter vector.
    endpoint: Endpoint = "chat"
    dimensions: StrictInt | None = Field(default=None, gt=0, le=16384)
    # Prompt caching of the shared prefix (see CacheSpec); None: requests carry no cache marks.
    cache: CacheSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _handler_mode(cls, data: Any) -> Any:
        """A processor with a handler runs in mode `handler` (the default when it states none)."""
        if isinstance(data, dict) and data.get("handler") is not None and "mode" not in data:
            return {**data, "mode": "handler"}
        return data

    @field_validator("version")
    @classmethod
    def _check_version(cls, value: str) -> str:
        if not _SEMVER_RE.fullmatch(value):
            raise ValueError(f"{value!r} is not a semver version like 1.0.0 (quote it in YAML)")
        return value

    @field_validator("template")
    @classmethod
    def _check_template(cls, value: str | None) -> str | None:
        if value is not None and is_jinja(value):
            try:
                _compile_jinja(value)
            except jinja2.TemplateSyntaxError as exc:
                raise ValueError(f"template does not compile: {exc.message} (line {exc.lineno})") from exc
        return value

    @field_validator("response_schema")
    @classmethod
    def _check_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            try:
                Draft202012Validator.check_schema(value)
            except SchemaError as exc:
                path = "/".join(str(p) for p in exc.absolute_path) or "(root)"
                raise ValueError(f"not a valid JSON Schema at {path}: {exc.message}") from exc
        return value

    @model_validator(mode="after")
    def _check_policy(self) -> Processor:
        if self.handler is not None and self.mode != "handler":
            raise ValueError(f"a processor with a handler runs in mode handler, not {self.mode}")
        if self.handler is None:
            if self.mode == "handler":
                raise ValueError("mode handler needs a handler: module:function")
            needed = _LLM_FIELDS if self.endpoint in CHAT_ENDPOINTS else _FIXED_OUTPUT_FIELDS
            missing = [name for name in needed if getattr(self, name) is None]
            if missing:
                raise ValueError(f"{missing[0]}: required field is missing (a processor without a handler "
                                 f"needs {', '.join(needed)})")
            problems = endpoint_problems(dict(self.__dict__))
            if problems:
                raise ValueError(problems[0])
        if self.cache is not None and (self.handler is not None or self.fixed_output):
            raise ValueError("cache: only a chat or responses processor has a prompt to cache")
        if self.handler is not None and (self.endpoint != "chat" or self.dimensions is not None):
            raise ValueError("endpoint: a handler step calls no provider endpoint")
        if self.output_policy != "text" and self.handler is None and self.endpoint in CHAT_ENDPOINTS:
            if self.response_schema is None:
                raise ValueError(f"response_schema is required when output_policy is {self.output_policy}")
            if self.response_schema.get("type") != "object":
                raise ValueError("response_schema must have type: object (providers return JSON objects)")
        if self.handler is not None and self.response_schema is not None and self.response_schema.get("type") != "object":
            raise ValueError("response_schema must have type: object (a handler returns a JSON object)")
        if self.provider == Provider.ANTHROPIC and self.temperature is not None and self.temperature > 1:
            raise ValueError("temperature must be between 0 and 1 for anthropic")
        return self

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Processor:
        """A validated copy with `update` applied (cached derived artefacts are rebuilt, never carried)."""
        return type(self).model_validate({**self.model_dump(), **(update or {})})

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.version)

    # Derived artefacts are cached_property values: built once, then read as plain attributes (the hot
    # validation path reads them for every result, and pydantic private attributes cost microseconds).
    @functools.cached_property
    def schema_validator(self) -> Draft202012Validator | None:
        """The Draft 2020-12 validator for `response_schema` (built once)."""
        return Draft202012Validator(self.response_schema) if self.response_schema is not None else None

    @functools.cached_property
    def template_fields(self) -> tuple[str, ...]:
        """Input fields the template references (top-level names for Jinja, dotted paths otherwise)."""
        return _template_fields(self.template) if self.template is not None else ()

    @functools.cached_property
    def derived(self) -> dict[str, Any]:
        """Per-processor cache other engine modules fill with artefacts derived from this definition."""
        return {}

    @functools.cached_property
    def fingerprint(self) -> str:
        """A short stable hash of the definition: two processors with one name+version must agree on it."""
        # Fields an LLM processor leaves unset (handler) stay out, so their fingerprints are those they were
        # registered under before handlers existed.
        # So do endpoint and dimensions at their defaults (definitions written before they existed).
        unset = {"handler"} if self.handler is None else set()
        unset |= {"endpoint"} if self.endpoint == "chat" else set()
        unset |= {"dimensions"} if self.dimensions is None else set()
        unset |= {"cache"} if self.cache is None else set()
        dumped = self.model_dump(mode="json", exclude=unset)
        canonical = json.dumps(dumped, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def memo(self, key: str, build: Callable[[], _T]) -> _T:
        """Per-processor cache for derived artefacts (compiled checkers); `build` runs once per key."""
        cache = self.derived
        try:
            return cache[key]
        except KeyError:
            value = cache[key] = build()
            return value

    @property
    def fixed_output(self) -> bool:
        """True when the endpoint fixes the output (embeddings, moderations): no policy, schema or repair."""
        return self.endpoint not in CHAT_ENDPOINTS

    @functools.cached_property
    def vector_dimensions(self) -> int | None:
        """The length an embeddings processor's vectors must have (None for other endpoints)."""
        return expected_dimensions(self.model or "", self.dimensions) if self.endpoint == "embeddings" else None

    @functools.cached_property
    def output_schema(self) -> dict[str, Any] | None:
        """The shape of an accepted output: the response schema, or the endpoint's fixed shape."""
        return fixed_output_schema(self.endpoint) or self.response_schema

    @functools.cached_property
    def system_prompt(self) -> str:
        """The system prompt as sent; json_in_text appends the schema as a fenced ```json block."""
        if self.output_policy != "json_in_text":
            return self.system
        schema = json.dumps(self.response_schema, indent=2, sort_keys=True)
        tail = f"Reply with exactly one JSON object that matches this JSON Schema:\n```json\n{schema}\n```"
        return f"{self.system}\n\n{tail}" if self.system else tail


def validate_input(processor: Processor, job_input: Any) -> list[str]:
    """Problems that would stop `job_input` from rendering (empty list: it renders)."""
    if not isinstance(job_input, Mapping):
        return [f"job input must be a JSON object, got {type(job_input).__name__}"]
    if processor.template is None:  # a handler step takes any object as its input
        return []
    if not is_jinja(processor.template) and not processor.fixed_output:
        errors = []
        for dotted in processor.template_fields:
            try:
                _lookup(job_input, dotted)
            except TemplateError as exc:
                errors.append(str(exc))
        return errors
    try:
        text = render_template(processor.template, job_input)
    except TemplateError as exc:
        return [str(exc)]
    if processor.fixed_output and not text.strip():  # the API refuses an empty input: never sent
        return [f"the template renders an empty {processor.endpoint} input"]
    return []
