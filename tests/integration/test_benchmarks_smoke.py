"""The benchmark script runs end to end on tiny settings (its figures are not checked: benchmarks never decide
pass/fail; this only keeps `./run bench` from rotting)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


# One sample per section, one browser of each kind: about 35 s quiet; minutes on a loaded box (load 40: 4 min).
@pytest.mark.timeout(600)
def test_benchmark_script_runs_on_a_tiny_setting() -> None:
    result = subprocess.run([sys.executable, str(BENCH / "run.py"), "--smoke", "--no-chart"], cwd=BENCH,
                            capture_output=True, text=True, timeout=580)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for section in ("start-up", "MCP overhead", "throughput", "sessions", "egress policy cost", "guards"):
        assert section in result.stdout
    rows = json.loads((BENCH / "results" / "bench.json").read_text())["rows"]
    assert all(r["ratio"] is None or r["ratio"] > 0 for r in rows)
    assert {r["section"] for r in rows} >= {"startup", "overhead", "throughput", "sessions", "egress", "guards"}


@pytest.mark.timeout(300)  # two of everything: about 20 s on a quiet 2-core box, minutes on a loaded one
def test_durable_benchmark_runs_on_a_tiny_setting() -> None:
    result = subprocess.run([sys.executable, str(BENCH / "durable.py"), "--smoke"], cwd=BENCH,
                            capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for section in ("1. memory", "2./3. resuming", "4. saving cost", "5. the spare", "6. restart after kill -9"):
        assert section in result.stdout
    assert "2/2 usable and logged in, 0 corrupt files" in result.stdout
