"""The simulator in a process of its own, as a provider would be: a client's work and the server do not
share one interpreter lock, the request times it logs are the times calls arrived, and its CPU time is
counted apart. Tests and benchmarks drive it over its `/_sim` control endpoints."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import httpx

from forge_dagster.simulator.config import SimConfig


class SimulatorProcess:
    """`python -m forge_dagster.simulator --port 0 --seed S [extra args]`, on 127.0.0.1."""

    def __init__(self, seed: int = 0, *extra_args: str) -> None:
        self._proc = subprocess.Popen([sys.executable, "-m", "forge_dagster.simulator", "--port", "0",
                                       "--seed", str(seed), *extra_args],
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        banner = self._proc.stdout.readline()  # "... listening on http://127.0.0.1:PORT"
        if "listening on " not in banner:
            self._proc.kill()
            raise RuntimeError(f"simulator did not start: {banner!r}")
        self.url = banner.rsplit("listening on ", 1)[1].strip()
        self.openai_base_url = self.url + "/v1"
        self.anthropic_base_url = self.url
        self.pid = self._proc.pid

    def _call(self, method: str, path: str, body: dict | None = None) -> Any:
        response = httpx.request(method, self.url + path, json=body, timeout=60)
        response.raise_for_status()
        return response.json()

    def configure(self, **knobs: Any) -> dict:
        """Set these knobs (the others keep their values); the simulator's whole configuration."""
        return self._call("POST", "/_sim/config", knobs)

    def reset(self) -> None:
        """Every knob back to its fault-free default, no batches, an empty request log."""
        self.configure(**SimConfig().to_dict())
        self._call("POST", "/_sim/reset")

    def refill_quota(self) -> None:
        self._call("POST", "/_sim/quota/refill")

    def requests(self) -> list[dict]:
        return self._call("GET", "/_sim/requests")

    def cpu_seconds(self) -> float:
        """User + system CPU time the simulator process has used so far (Linux /proc)."""
        fields = open(f"/proc/{self._proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(10)

    def __enter__(self) -> SimulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
