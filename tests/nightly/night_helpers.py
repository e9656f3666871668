"""Helpers for whole-night tests: a real git repository with a day of work, and reading Slack through
the relay until a message arrives (with a deadline)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from forge_dagster.core.ops.relay import build_relay

FAKE_AWS_KEY = "AKIAZ3Q4XK7P2M5N8R1T"  # matches the rule; not a real key


def git(repo: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "Dev", "GIT_AUTHOR_EMAIL": "dev@example.org", "GIT_COMMITTER_NAME": "Dev",
           "GIT_COMMITTER_EMAIL": "dev@example.org", "PATH": "/usr/bin:/bin", "HOME": str(repo)}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout


def day_of_work(repo: Path) -> Path:
    """A repository with today's commits on main (a pinned dependency file, code with a secret), a
    branch merged with a merge commit, and an open branch."""
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "requirements.txt").write_text("requests==2.19.0\nurllib3==1.26.4\n")
    (repo / "app.py").write_text("def handler(event):\n    return event['body']\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "Add the handler and its pins")
    (repo / "settings.py").write_text(f'AWS_ACCESS_KEY_ID = "{FAKE_AWS_KEY}"\nPASSWORD = "changeme-example"\n')
    (repo / "app.py").write_text("def handler(event):\n    data = event['body']\n    return eval(data)\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "Read settings; evaluate the body")
    git(repo, "checkout", "-q", "-b", "feature/retries")
    (repo / "retry.py").write_text("def retry(f):\n    return f()\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "Retry helper")
    git(repo, "checkout", "-q", "main")
    git(repo, "merge", "-q", "--no-ff", "-m", "Merge feature/retries", "feature/retries")
    git(repo, "checkout", "-q", "-b", "feature/open-work")
    (repo / "wip.py").write_text("TODO = True\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "Work in progress")
    git(repo, "checkout", "-q", "main")
    return repo


def slack_until(store, sim, tmp_path, needle: str, *, deadline_s: float = 60.0) -> list[dict]:
    """Drain the outbox to the simulator's Slack until a message containing `needle` arrived (the relay
    reads rows below every open transaction, so a busy shared database may delay them)."""
    relay = build_relay(store, forge_home=tmp_path, slack_webhook_url=sim.slack_webhook_url)
    end = time.monotonic() + deadline_s
    try:
        while True:
            relay.drain()
            found = [m for m in sim.slack_messages() if needle in json.dumps(m)]
            if found or time.monotonic() > end:
                return found
            time.sleep(0.2)
    finally:
        relay.close()
