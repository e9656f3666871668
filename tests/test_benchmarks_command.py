"""`python -m benchmarks` itself (the harness, not a speed target): one command writes a report a reader can
trust to be complete, so a change to the engine that breaks a benchmark is seen here, not at release time."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import ROOT


def test_benchmark_command_writes_rows_with_median_spread_and_ratio_as_json_and_png(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "shaping", "--repeat", "2",
         "--output-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "benchmarks-quick.json").read_text())
    assert report["command"].startswith("python -m benchmarks --quick")
    assert "database" not in report  # shaping needs none: no PostgreSQL was started for it
    assert [r["label"] for r in report["rows"]] == ["forge shape + encode", "json.dumps alone"]
    for row in report["rows"]:
        assert row["measures"] and row["unit"] == "MB/s"
        assert len(row["samples"]) == 2
        assert row["min"] <= row["median"] <= row["max"]
    (ratio,) = report["rows"][0]["ratios"]
    assert ratio["of"] == "json.dumps alone" and ratio["min"] <= ratio["median"] <= ratio["max"]
    assert (tmp_path / "benchmarks-quick.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "forge shape + encode" in proc.stdout
