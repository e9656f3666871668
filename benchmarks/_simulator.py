"""The provider simulator (a local test double) in a process of its own, as a provider would be: the
benchmark's client work and the server do not share an interpreter lock, and the server's CPU time is
counted apart from Forge's."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import httpx

from forge_dagster.simulator import SimConfig


class SimulatorProcess:
    """`python -m forge_dagster.simulator --port 0` with control calls over its /_sim endpoints."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen([sys.executable, "-m", "forge_dagster.simulator", "--port", "0"],
                                      stdout=subprocess.PIPE, text=True)
        banner = self._proc.stdout.readline()  # "... listening on http://127.0.0.1:PORT"
        if "listening on " not in banner:
            self._proc.kill()
            raise RuntimeError(f"simulator did not start: {banner!r}")
        self.url = banner.rsplit("listening on ", 1)[1].strip()
        self.openai_base_url = self.url + "/v1"

    def _call(self, method: str, path: str, body: dict | None = None) -> Any:
        response = httpx.request(method, self.url + path, json=body, timeout=60)
        response.raise_for_status()
        return response.json()

    def configure(self, **knobs: Any) -> None:
        """Every knob at its fault-free default, then `knobs`; the log, limits and stores emptied."""
        self._call("POST", "/_sim/config", {**SimConfig().to_dict(), **knobs})
        self._call("POST", "/_sim/reset")

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

    def __enter__(self) -> SimulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
