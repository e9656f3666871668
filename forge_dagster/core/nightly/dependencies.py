"""A Python project's declared dependencies: `[project].dependencies` and optional dependencies of a
pyproject.toml, and requirements*.txt files; each with its specifier and its exact pin (`==X`) if any."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name


@dataclass(frozen=True)
class Dependency:
    name: str  # canonical (PEP 503)
    spec: str  # the specifier as written, e.g. ">=2,<3"
    pinned: str | None  # the version of an exact `==` pin
    file: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def project_files(path: str | Path) -> list[Path]:
    """The dependency files of a project: the file itself, or a folder's pyproject.toml and
    requirements*.txt."""
    path = Path(path).expanduser()
    if path.is_file():
        return [path]
    found = [path / "pyproject.toml"] if (path / "pyproject.toml").is_file() else []
    return found + sorted(path.glob("requirements*.txt"))


def _dependency(text: str, file: Path) -> Dependency | None:
    try:
        req = Requirement(text)
    except InvalidRequirement:
        return None
    pins = [s.version for s in req.specifier if s.operator in ("==", "===") and "*" not in s.version]
    return Dependency(canonicalize_name(req.name), str(req.specifier), pins[0] if pins else None, str(file))


def read_dependencies(file: Path) -> list[Dependency]:
    """The dependencies one file declares (unparseable lines and options such as `-r` are left out)."""
    if file.name == "pyproject.toml":
        project = tomllib.loads(file.read_text()).get("project", {})
        lines = list(project.get("dependencies", []))
        for extra in project.get("optional-dependencies", {}).values():
            lines += extra
    else:
        lines = [line.split("#", 1)[0].strip() for line in file.read_text().splitlines()]
        lines = [line for line in lines if line and not line.startswith("-")]
    return [d for d in (_dependency(line, file) for line in lines) if d is not None]


def project_dependencies(path: str | Path) -> list[Dependency]:
    """Every dependency a project declares, in file order (a package may appear once per file)."""
    return [d for f in project_files(path) for d in read_dependencies(f)]
