"""The day's work in local git repositories, read with the `git` command: commits with their diffs (the
added lines numbered as in the new file), and branches merged in the window or still open."""

from __future__ import annotations

import re
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

_SEP = "\x1f"
_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,\d+)? @@")


class GitError(Exception):
    """A git command failed (not a repository, git missing, a bad revision)."""


@dataclass(frozen=True)
class FileDiff:
    """One file's change in a commit: its patch and the lines it added, numbered as in the new file."""

    path: str
    patch: str
    added: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True)
class Change:
    """One commit: who, when, what, and its files' diffs."""

    repo: str
    sha: str
    author: str
    date: str
    subject: str
    files: tuple[FileDiff, ...] = field(default_factory=tuple)

    def summary(self) -> dict[str, Any]:
        return {"repo": self.repo, "sha": self.sha[:12], "author": self.author, "date": self.date,
                "subject": self.subject, "files": [f.path for f in self.files]}


def git(repo: str | Path, *args: str, timeout_s: float = 60.0) -> str:
    """The output of `git -C repo args...`; GitError with git's message when it fails."""
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=timeout_s,
                              check=False, errors="replace")
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GitError(f"git {args[0]} in {repo}: {exc}") from exc
    if done.returncode != 0:
        raise GitError(f"git {args[0]} in {repo}: {done.stderr.strip()[:300]}")
    return done.stdout


def parse_patch(text: str) -> list[FileDiff]:
    """Split `git show` output into file diffs, numbering each added line as in the new file."""
    files: list[FileDiff] = []
    for block in re.split(r"^(?=diff --git )", text, flags=re.M):
        if not block.startswith("diff --git "):
            continue
        path = None
        added: list[tuple[int, str]] = []
        line_no = 0
        for line in block.splitlines():
            if line.startswith("+++ "):
                path = None if line[4:] == "/dev/null" else line[4:].removeprefix("b/")
            elif (m := _HUNK.match(line)) is not None:
                line_no = int(m.group(1))
            elif line.startswith("+") and not line.startswith("+++"):
                added.append((line_no, line[1:]))
                line_no += 1
            elif line.startswith(" "):
                line_no += 1
        if path is None:  # a deletion or a binary file: nothing was added to review
            match = re.match(r"diff --git a/(\S+) b/(\S+)", block)
            path = match.group(2) if match else "?"
        files.append(FileDiff(path, block, tuple(added)))
    return files


def changes_since(repo: str, since: datetime, *, limit: int = 20) -> list[Change]:
    """Commits on the checked-out branch since `since` (merges left out), newest first, with diffs."""
    log = git(repo, "log", f"--since={since.isoformat()}", "--no-merges", f"-n{limit}",
              f"--format=%H{_SEP}%an{_SEP}%aI{_SEP}%s")
    changes = []
    for line in log.splitlines():
        sha, author, date, subject = line.split(_SEP, 3)
        patch = git(repo, "show", "--format=", "--unified=3", "--no-color", "--no-ext-diff", sha)
        changes.append(Change(repo, sha, author, date, subject, tuple(parse_patch(patch))))
    return changes


@dataclass(frozen=True)
class Branch:
    """A branch beside the checked-out one: merged in the window, or open (commits not merged yet)."""

    name: str
    state: str  # merged | open
    last_commit: str
    commits: tuple[str, ...]  # subjects, newest first

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _subjects(repo: str, revs: str, limit: int = 10) -> tuple[str, ...]:
    return tuple(git(repo, "log", "--format=%s", f"-n{limit}", revs).splitlines())


def branches(repo: str, since: datetime) -> list[Branch]:
    """Branches merged into the checked-out branch by a merge commit in the window, and open branches
    (with commits the checked-out branch does not have) that moved in the window."""
    tips = {}
    for line in git(repo, "for-each-ref", f"--format=%(refname:short){_SEP}%(objectname){_SEP}"
                    "%(committerdate:iso-strict)", "refs/heads").splitlines():
        name, sha, date = line.split(_SEP)
        tips[name] = (sha, date)
    head = git(repo, "rev-parse", "--abbrev-ref", "HEAD").strip()
    found: list[Branch] = []
    merges = git(repo, "log", "--merges", f"--since={since.isoformat()}", f"--format=%P{_SEP}%cI").splitlines()
    merged_tips = {}
    for line in merges:
        parents, date = line.split(_SEP)
        parts = parents.split()
        if len(parts) >= 2:
            merged_tips[parts[1]] = (parts[0], date)
    for name, (sha, date) in sorted(tips.items()):
        if name == head:
            continue
        if sha in merged_tips:
            base, merged_at = merged_tips[sha]
            found.append(Branch(name, "merged", merged_at, _subjects(repo, f"{base}..{sha}")))
        elif int(git(repo, "rev-list", "--count", f"HEAD..{name}").strip() or 0) > 0 \
                and datetime.fromisoformat(date) >= since:
            found.append(Branch(name, "open", date, _subjects(repo, f"HEAD..{name}")))
    return found
