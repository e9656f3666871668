"""Processors from YAML files: one file loaded and checked (every problem names the file and the field,
a handler that cannot be imported included), a folder of them, and the catalog by name and version."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError as PydanticValidationError

from forge_dagster.core.config import load_settings
from forge_dagster.core.platform.processors import HANDLER_RE, Processor, ProcessorError, _semver_key

PACKAGE_PROCESSORS_DIR = Path(__file__).resolve().parents[2] / "examples" / "processors"
PROCESSORS_DIR_ENV = "FORGE_PROCESSORS_DIR"


def _describe(exc: PydanticValidationError) -> tuple[str, str]:
    parts, first = [], ""
    for err in exc.errors():
        msg = err["msg"].removeprefix("Value error, ")
        named = msg.split(":", 1)[0] if not err["loc"] else ""  # a whole-definition check naming its field
        field = ".".join(str(p) for p in err["loc"]) or (named if named in Processor.model_fields else "(processor)")
        first = first or field
        if err["type"] == "missing":
            msg = "required field is missing"
        parts.append(msg if msg.startswith(f"{field}:") else f"{field}: {msg}")
    return first, "; ".join(parts)


def load_processor_file(path: str | Path) -> Processor:
    """Load and check one YAML processor file; every problem raises ProcessorError naming file and field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProcessorError(path, "(file)", f"cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ProcessorError(path, "(yaml)", f"invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ProcessorError(path, "(processor)", f"must be a YAML mapping, got {type(data).__name__}")
    try:
        processor = Processor.model_validate(data)
    except PydanticValidationError as exc:
        field, message = _describe(exc)
        raise ProcessorError(path, field, message) from None
    if processor.handler is not None:
        try:
            import_handler(processor.handler)
        except ValueError as exc:
            raise ProcessorError(path, "handler", str(exc)) from None
    return processor


def import_handler(path: str) -> Callable[..., Any]:
    """The callable a `module:function` handler path names; ValueError saying why when it cannot be had."""
    if not HANDLER_RE.fullmatch(path):
        raise ValueError(f"{path!r} is not a module:function path")
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the same refusal, with its reason
        raise ValueError(f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}") from exc
    function = getattr(module, attr, None)
    if not callable(function):
        raise ValueError(f"module {module_name!r} has no callable {attr!r}")
    return function


class ProcessorCatalog(Mapping[str, Processor]):
    """Processors by name (latest version) and by (name, version)."""

    def __init__(self, processors: Iterable[Processor] = ()) -> None:
        self._by_key: dict[tuple[str, str], Processor] = {}
        self._latest: dict[str, Processor] = {}
        for processor in processors:
            self.add(processor)

    def add(self, processor: Processor, source: str | Path | None = None) -> None:
        """Register a processor; a different definition under an existing name+version is refused."""
        existing = self._by_key.get(processor.key)
        if existing is not None:
            if existing.fingerprint == processor.fingerprint:
                return
            raise ProcessorError(source, "version", f"duplicate {processor.name} {processor.version}")
        self._by_key[processor.key] = processor
        latest = self._latest.get(processor.name)
        if latest is None or _semver_key(processor.version) > _semver_key(latest.version):
            self._latest[processor.name] = processor

    def __getitem__(self, key: str | tuple[str, str]) -> Processor:
        found = self._by_key.get(key) if isinstance(key, tuple) else self._latest.get(key)
        if found is None:
            raise KeyError(f"unknown processor {key!r}; known: {sorted(self._latest)}")
        return found

    def __contains__(self, key: object) -> bool:
        return key in self._by_key if isinstance(key, tuple) else key in self._latest

    def get_version(self, name: str, version: str | None = None) -> Processor:
        """The processor `name` at `version` (latest when None); KeyError when unknown."""
        return self[name] if version is None else self[(name, version)]

    def for_new_job(self, name: str, version: str | None = None) -> Processor:
        """The processor a new job is pinned to (here: as `get_version`; the registry's catalog also
        refuses retired versions and resolves no version to the active one)."""
        return self.get_version(name, version)

    def versions(self, name: str) -> list[str]:
        """Known versions of `name`, oldest first."""
        return sorted((v for n, v in self._by_key if n == name), key=_semver_key)

    def all(self) -> list[Processor]:
        """Every processor at every version, by name then version."""
        return sorted(self._by_key.values(), key=lambda p: (p.name, _semver_key(p.version)))

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._latest))

    def __len__(self) -> int:
        return len(self._latest)


def _processor_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise ProcessorError(directory, "(directory)", "processors directory does not exist")
    return sorted(p for p in directory.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def default_processor_dirs() -> list[Path]:
    """The packaged examples, then `$FORGE_PROCESSORS_DIR` when set."""
    dirs = [PACKAGE_PROCESSORS_DIR]
    extra = load_settings().processors_dir
    if extra:
        dirs.append(Path(extra))
    return dirs


def load_processors(directory: str | Path | Iterable[str | Path] | None = None) -> ProcessorCatalog:
    """Load every *.yaml / *.yml under one directory or several (None: `default_processor_dirs()`).
    Identical duplicates across directories are merged; a conflicting name+version is an error."""
    if directory is None:
        dirs = default_processor_dirs()
    elif isinstance(directory, str | Path):
        dirs = [Path(directory)]
    else:
        dirs = [Path(d) for d in directory]
    catalog = ProcessorCatalog()
    seen: dict[tuple[str, str], Path] = {}
    for folder in dirs:
        in_folder: set[tuple[str, str]] = set()
        for path in _processor_files(folder):
            processor = load_processor_file(path)
            other = seen.get(processor.key)
            if processor.key in in_folder or (
                other is not None and catalog[processor.key].fingerprint != processor.fingerprint
            ):
                message = f"duplicate {processor.name} {processor.version} (also defined in {other})"
                raise ProcessorError(path, "version", message)
            catalog.add(processor, path)
            in_folder.add(processor.key)
            seen.setdefault(processor.key, path)
    return catalog
