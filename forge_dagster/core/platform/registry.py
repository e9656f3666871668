"""Processors in PostgreSQL: the registry the pipeline reads, seeded and kept in step from YAML.

A team writes a processor as YAML; syncing registers each new name+version in the store. The first
version of a new name arrives active; every later version arrives as a draft, is previewed
(`forge processors preview`), then promoted, which retires the version active before it. Exactly one
version per name is active (the database enforces it), and only draft -> active -> retired moves exist.

New jobs without a version are pinned at intake to the active version; a job may name a draft (to try
it on real work) but never a retired version. A job keeps the version it was pinned to whatever is
promoted later: the catalog resolves every registered version, retired ones included.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from forge_dagster.core.platform.catalog import (
    ProcessorCatalog,
    default_processor_dirs,
    load_processor_file,
    load_processors,
)
from forge_dagster.core.platform.processors import Processor, _semver_key
from forge_dagster.core.process_cache import ProcessCache
from forge_dagster.core.store import ForgeStore
from forge_dagster.core.store.processor_store import RegistryError

log = logging.getLogger(__name__)

__all__ = [
    "RegistryCatalog", "RegistryEntry", "RegistryError", "SyncReport", "load_catalog", "promote",
    "register_processors", "retire", "sync_processors",
]

# definition hash -> Processor (keeps compiled validators warm)
_built: ProcessCache[str, Processor] = ProcessCache("processors by definition hash", max_entries=1024)
# (url, schema) -> signature of the YAML synced last
_synced: ProcessCache[tuple[str, str], tuple[Any, ...]] = ProcessCache("YAML signature synced per store")


@dataclass(frozen=True)
class RegistryEntry:
    """One registered version and where it stands."""

    processor: Processor
    status: str
    source: str | None = None
    created_at: datetime | None = None
    promoted_at: datetime | None = None
    retired_at: datetime | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.processor.key


class RegistryCatalog(ProcessorCatalog):
    """The catalog as the registry says: a name resolves to its active version (never simply the
    latest), every registered version resolves by (name, version), and new jobs are refused retired
    versions. Iterating gives the names that have an active version."""

    def __init__(self, entries: Iterable[RegistryEntry] = (), problems: Iterable[str] = ()) -> None:
        super().__init__()
        self.entries: dict[tuple[str, str], RegistryEntry] = {}
        self._active: dict[str, Processor] = {}
        self.problems = list(problems)  # stored definitions this code cannot load
        for entry in entries:
            self.add(entry.processor)
            self.entries[entry.key] = entry
            if entry.status == "active":
                self._active[entry.processor.name] = entry.processor

    def __getitem__(self, key: str | tuple[str, str]) -> Processor:
        if isinstance(key, tuple):
            return super().__getitem__(key)
        found = self._active.get(key)
        if found is None:
            raise KeyError(f"no active version of processor {key!r}; active: {sorted(self._active)}")
        return found

    def __contains__(self, key: object) -> bool:
        return super().__contains__(key) if isinstance(key, tuple) else key in self._active

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._active))

    def __len__(self) -> int:
        return len(self._active)

    def status(self, name: str, version: str) -> str:
        """'draft', 'active' or 'retired'; KeyError when the version is not registered."""
        return self.entries[(name, version)].status

    def active_version(self, name: str) -> str | None:
        found = self._active.get(name)
        return found.version if found else None

    def for_new_job(self, name: str, version: str | None = None) -> Processor:
        """The version a new job is pinned to: the active one when `version` is None; a named draft or
        active version as asked. A retired version, or a name with nothing active, raises ValueError
        saying so; an unknown name or version raises KeyError."""
        if version is None and name in self._active:  # the common case, once per intake line
            return self._active[name]
        versions = self.versions(name)
        if not versions:
            raise KeyError(f"unknown processor {name!r}")
        if version is None:
            if name not in self._active:
                raise ValueError(f"processor {name!r} has no active version (registered: {', '.join(versions)}; "
                                 "promote one with `forge processors promote`)")
            return self._active[name]
        processor = super().__getitem__((name, version))
        if self.status(name, version) == "retired":
            now = self.active_version(name)
            raise ValueError(f"processor {name} {version} is retired; new jobs use "
                             f"{now if now else 'no version (none is active)'}")
        return processor


@dataclass
class SyncReport:
    registered: list[tuple[str, str, str]] = field(default_factory=list)  # (name, version, status)
    unchanged: int = 0
    conflicts: list[str] = field(default_factory=list)


def _definition_hash(definition: dict[str, Any]) -> str:
    # Key order is part of the definition (schema property order steers generation): no sort_keys.
    return hashlib.sha256(json.dumps(definition, separators=(",", ":")).encode()).hexdigest()


def _build(definition: dict[str, Any]) -> Processor:
    return _built.get_or_create(_definition_hash(definition), lambda: Processor.model_validate(definition))


def _row(processor: Processor, source: str | None, activate_if_new: bool) -> dict[str, Any]:
    return {
        "name": processor.name, "version": processor.version, "provider": str(processor.provider),
        "model": processor.model, "mode": processor.mode, "tags": list(processor.tags),
        "definition": processor.model_dump(mode="json"), "fingerprint": processor.fingerprint,
        "source": source, "activate_if_new": activate_if_new,
    }


def registry_entries(store: ForgeStore) -> tuple[list[RegistryEntry], list[str]]:
    """Every registered version as an entry, and the stored definitions that no longer load."""
    entries, problems = [], []
    for row in store.processors.list():
        try:
            processor = _build(row["definition"])
        except ValidationError as exc:
            problems.append(f"{row['name']} {row['version']}: stored definition does not load: {exc}")
            continue
        entries.append(RegistryEntry(processor, row["status"], row["source"], row["created_at"],
                                     row["promoted_at"], row["retired_at"]))
    return entries, problems


def register_processors(
    store: ForgeStore, processors: Iterable[tuple[Processor, str | None]], *, actor: str | None = None
) -> SyncReport:
    """Register (processor, source) pairs not in the registry yet. A name+version already registered
    with another definition is a conflict: the registry keeps its own (versions never change)."""
    report = SyncReport()
    existing = {e.key: e.processor for e in registry_entries(store)[0]}
    fresh: dict[tuple[str, str], tuple[Processor, str | None]] = {}
    for processor, source in processors:
        known = existing.get(processor.key)
        if known is None:
            fresh.setdefault(processor.key, (processor, source))
        elif known.fingerprint == processor.fingerprint:
            report.unchanged += 1
        else:
            report.conflicts.append(f"{processor.name} {processor.version} from {source}: differs from the "
                                    "registered definition (a changed definition needs a new version)")
    newest: dict[str, str] = {}
    for name, version in fresh:
        if name not in newest or _semver_key(version) > _semver_key(newest[name]):
            newest[name] = version
    rows = [_row(p, src, newest[p.name] == p.version) for p, src in fresh.values()]
    report.registered = store.processors.register(rows, actor=actor)
    for conflict in report.conflicts:
        log.warning("processor sync: %s", conflict)
    return report


def _signature(dirs: list[Path]) -> tuple[Any, ...]:
    files = []
    for folder in dirs:
        for path in sorted(folder.rglob("*")) if folder.is_dir() else [folder]:
            if path.suffix in (".yaml", ".yml") and path.is_file():
                stat = path.stat()
                files.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(str(d) for d in dirs), tuple(files)


def sync_processors(
    store: ForgeStore, directories: Iterable[str | Path] | None = None, *, actor: str = "sync"
) -> SyncReport:
    """Register every YAML processor under `directories` (default: `default_processor_dirs()`) that the
    registry does not have yet. The YAML must load as a whole (a bad file raises ProcessorError)."""
    dirs = [Path(d) for d in (default_processor_dirs() if directories is None else directories)]
    catalog = load_processors(dirs)  # checks every file and refuses conflicting duplicates
    sources: dict[tuple[str, str], str] = {}
    for folder in dirs:
        for path in sorted(folder.rglob("*")):
            if path.suffix in (".yaml", ".yml") and path.is_file():
                sources.setdefault(load_processor_file(path).key, str(path))
    report = register_processors(store, [(p, sources.get(p.key)) for p in catalog.all()], actor=actor)
    _synced.put((store.url, store.schema), _signature(dirs))
    return report


def load_catalog(
    store: ForgeStore, directories: Iterable[str | Path] | None = None, *, sync: bool = True
) -> RegistryCatalog:
    """The registry's catalog. With `sync`, YAML under `directories` (default dirs when None) is
    registered first, unless those files are unchanged since this process last synced them."""
    if sync:
        dirs = [Path(d) for d in (default_processor_dirs() if directories is None else directories)]
        current = _synced.get((store.url, store.schema))
        if current != _signature(dirs):
            sync_processors(store, dirs)
    entries, problems = registry_entries(store)
    for problem in problems:
        log.error("processor registry: %s", problem)
    return RegistryCatalog(entries, problems)


def promote(store: ForgeStore, name: str, version: str, *, actor: str | None = None,
            reason: str | None = None) -> str | None:
    """Make draft `version` of `name` active; returns the version it replaced (now retired), if any."""
    return store.processors.promote(name, version, actor=actor, reason=reason)


def retire(store: ForgeStore, name: str, version: str | None = None, *, actor: str | None = None) -> str:
    """Retire `version` of `name` (default: the active one); jobs pinned to it still finish."""
    return store.processors.retire(name, version, actor=actor)
