"""LoRA adapter versions on disk, and the training op that produces them on the GPU.

Layout under `$FORGE_HOME/adapters/<name>/`: one folder per semver version (`1.2.0/`, holding the files
and `adapter.json`), a `current` symlink to the active version, and `.history` (the activation stack).
The symlink is swapped atomically: a new link is made beside it and renamed over it, so a reader sees
the old version or the new one, never a missing link. Rollback re-points `current` at the version that
was active before, in one rename.

`current` is the truth; `.history` is written before each swap and holds both the new stack and the one
it replaces. If a crash falls between the two, the next reader keeps the stack that ends at what
`current` really points to, so an interrupted activation or rollback can never make the next rollback
go forward.

Training holds the GPU mutex and unloads every Ollama model (checked with `/api/ps`) before the trainer
command starts; the trainer is stopped (SIGTERM, then SIGKILL after a grace period) the moment the lease
is lost, so a holder that lost the lock does not keep using the GPU. Its result is recorded under the
lease's fence before the new version is registered.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MANIFEST = "adapter.json"


class AdapterError(Exception):
    """A bad name or version, a missing or duplicate version, or nothing to roll back to."""


@dataclass(frozen=True)
class AdapterVersion:
    name: str
    version: str
    path: str
    active: bool
    registered_at: str | None
    sha256: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def semver_key(version: str) -> tuple[int, int, int]:
    match = SEMVER.match(version)
    if not match:
        raise AdapterError(f"version {version!r} is not semver X.Y.Z")
    return int(match[1]), int(match[2]), int(match[3])


def _tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


class AdapterRegistry:
    """Versioned adapters under `root` (default `$FORGE_HOME/adapters`)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _dir(self, name: str) -> Path:
        if not NAME.match(name):
            raise AdapterError(f"adapter name {name!r}: use letters, digits, '.', '_' or '-' (max 64)")
        return self.root / name

    @contextmanager
    def _locked(self, name: str) -> Iterator[Path]:
        folder = self._dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield folder

    def register(self, source: Path, name: str, version: str, *, meta: dict[str, Any] | None = None
                 ) -> AdapterVersion:
        """Copy `source` (a folder or one file) in as `name` `version`; the version appears whole or not at all."""
        semver_key(version)
        source = Path(source)
        if not source.exists():
            raise AdapterError(f"{source} does not exist")
        with self._locked(name) as folder:
            target = folder / version
            if target.exists():
                raise AdapterError(f"{name} {version} is already registered")
            staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
            try:
                if source.is_dir():
                    shutil.copytree(source, staging, dirs_exist_ok=True)
                else:
                    shutil.copy2(source, staging / source.name)
                manifest = {"name": name, "version": version, "source": str(source.resolve()),
                            "registered_at": datetime.now(UTC).isoformat(), "sha256": _tree_digest(staging),
                            **(meta or {})}
                (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
                os.rename(staging, target)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        return self._version(name, version, self.current(name))

    def _version(self, name: str, version: str, current: str | None) -> AdapterVersion:
        path = self._dir(name) / version
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except (OSError, ValueError):
            manifest = {}
        return AdapterVersion(name, version, str(path), version == current, manifest.get("registered_at"),
                              manifest.get("sha256"))

    def names(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and NAME.match(p.name))

    def versions(self, name: str) -> list[str]:
        """Registered versions of `name`, lowest first."""
        folder = self._dir(name)
        if not folder.exists():
            return []
        return sorted((p.name for p in folder.iterdir() if p.is_dir() and SEMVER.match(p.name)), key=semver_key)

    def list(self, name: str | None = None) -> list[AdapterVersion]:
        """Every version of `name` (or of every adapter), marking the active one."""
        out = []
        for n in [name] if name else self.names():
            current = self.current(n)
            out.extend(self._version(n, v, current) for v in self.versions(n))
        return out

    def current(self, name: str) -> str | None:
        """The active version of `name`, or None."""
        try:
            return os.readlink(self._dir(name) / "current")
        except FileNotFoundError:
            return None

    def current_path(self, name: str) -> Path:
        """`$FORGE_HOME/adapters/<name>/current`: the path a model server loads."""
        return self._dir(name) / "current"

    def _history(self, folder: Path) -> list[str]:
        """The activation stack, ending at the version `current` points to when it can."""
        try:
            data = json.loads((folder / ".history").read_text())
        except (OSError, ValueError):
            data = []
        stack, before = (data, None) if isinstance(data, list) else (data.get("stack", []), data.get("before"))
        current = self.current(folder.name)
        if current is None:  # nothing active: at most a first activation that never swapped
            return list(before) if before is not None else []
        for candidate in (stack, before):  # `before`: the swap after this write never happened
            if candidate and candidate[-1] == current:
                return list(candidate)
        return [*stack, current]  # activated before history was kept, or `current` moved by hand

    def _write_history(self, folder: Path, stack: list[str], before: list[str]) -> None:
        """Record the stack about to become true, with the one it replaces (written before the swap)."""
        tmp = folder / f".history-{secrets.token_hex(4)}"
        tmp.write_text(json.dumps({"stack": stack[-100:], "before": before[-100:]}))
        os.replace(tmp, folder / ".history")

    @staticmethod
    def _swap(folder: Path, version: str) -> None:
        tmp = folder / f".current-{secrets.token_hex(4)}"
        os.symlink(version, tmp)  # relative: the tree can move
        os.replace(tmp, folder / "current")  # rename(2) over the old link: atomic

    def activate(self, name: str, version: str) -> str | None:
        """Point `current` at `version`; returns the version that was active before."""
        semver_key(version)
        with self._locked(name) as folder:
            if not (folder / version).is_dir():
                raise AdapterError(f"{name} {version} is not registered")
            previous = self.current(name)
            if previous == version:
                return previous
            history = self._history(folder)
            self._write_history(folder, [*history, version], history)
            self._swap(folder, version)
            return previous

    def rollback(self, name: str) -> tuple[str, str]:
        """Re-activate the version active before the current one, in one step. Returns (from, to)."""
        with self._locked(name) as folder:
            history = self._history(folder)
            while len(history) >= 2 and not (folder / history[-2]).is_dir():
                del history[-2]  # a version removed by hand is skipped
            if len(history) < 2:
                raise AdapterError(f"{name}: no earlier version to roll back to")
            target = history[-2]
            self._write_history(folder, history[:-1], history)
            self._swap(folder, target)
            return history[-1], target


class _TrainerStop:
    """Stops the trainer when the GPU lease is lost: SIGTERM at once, SIGKILL after `grace_s`. The lease's
    renewal thread calls `lease_lost`, possibly before the trainer has started."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._lost = False

    def lease_lost(self, _lease=None) -> None:
        with self._lock:
            self._lost = True
            proc = self._proc
        if proc is not None:
            self._stop(proc)

    def started(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._proc, lost = proc, self._lost
        if lost:
            self._stop(proc)

    def _stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.terminate()
            killer = threading.Timer(self.grace_s, lambda: proc.poll() is None and proc.kill())
            killer.daemon = True
            killer.start()


def _run_trainer(argv: list[str], env: dict[str, str], stop: _TrainerStop, timeout_s: float | None) -> tuple[int, str]:
    """Run the trainer to its end (or until the lease is lost, or `timeout_s`); (exit code, stderr tail)."""
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        stop.started(proc)
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            stop.lease_lost()  # same treatment: terminate, then kill after the grace period
            code = proc.wait()
        finally:
            if proc.poll() is None:  # interrupted while waiting: never leave the trainer on the GPU
                proc.kill()
                proc.wait()
        log.seek(0)
        return code, log.read()[-2000:]


def train_adapter(mutex, runtime, registry: AdapterRegistry, repo, *, name: str, version: str, command: str,
                  activate: bool = False, acquire_timeout_s: float | None = 900.0,
                  train_timeout_s: float | None = None, stop_grace_s: float = 10.0) -> dict[str, Any]:
    """Train on the GPU: hold the mutex, unload every Ollama model, run `command` (no shell; `{output}`
    is replaced by the output folder, also in $FORGE_ADAPTER_OUTPUT), record the result under the lease's
    fence, then register (and optionally activate) the new version. If the lease is lost the trainer is
    stopped (SIGTERM, SIGKILL after `stop_grace_s`) and LockLost is raised; nothing is registered."""
    semver_key(version)
    registry._dir(name)
    if version in registry.versions(name):
        raise AdapterError(f"{name} {version} is already registered")
    stop = _TrainerStop(stop_grace_s)
    with mutex.hold(acquire_timeout_s, on_lost=stop.lease_lost) as lease:
        unloaded = runtime.unload_all()
        registry.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".train-", dir=registry.root) as out:
            argv = [part.replace("{output}", out) for part in shlex.split(command)]
            env = {**os.environ, "FORGE_ADAPTER_OUTPUT": out, "FORGE_GPU_FENCE": str(lease.fence)}
            code, tail = _run_trainer(argv, env, stop, train_timeout_s)
            lease.check()  # LockLost when the trainer was stopped because the lock went to someone else
            if code != 0:
                raise RuntimeError(f"trainer exited {code}: {tail.strip()[-500:]}")
            detail = {"name": name, "version": version, "unloaded": unloaded, "command": argv[0]}
            result_id = repo.record_gpu_result(lease.fencing, "adapter_training", detail)
            adapter = registry.register(Path(out), name, version, meta={"fence": lease.fence, "trainer": argv[0]})
        if activate:
            registry.activate(name, version)
    return {**detail, "fence": lease.fence, "result_id": result_id, "path": adapter.path, "activated": activate}
