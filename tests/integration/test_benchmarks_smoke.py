"""The benchmark script runs end to end on tiny settings (its figures are not checked: benchmarks never decide
pass/fail; this only keeps `./run bench` from rotting)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


SCRIPTS = {"run": ["run.py", "--smoke", "--no-chart"], "durable": ["durable.py", "--smoke"]}


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[subprocess.Popen[str], Path]]]:
    """Both smoke runs started at once: each is mostly waiting (browser starts, settle pauses, a server killed
    and restarted), so side by side they take about the longer one's time, not the sum (the suite's budget).
    They share nothing: each has its own temp folder, site port and browser. Output goes to files, not pipes,
    so the run not yet waited for never blocks on a full pipe."""
    folder = tmp_path_factory.mktemp("smoke")
    runs = {}
    for name, args in SCRIPTS.items():
        out = folder / f"{name}.out"
        with out.open("w") as sink:
            proc = subprocess.Popen([sys.executable, str(BENCH / args[0]), *args[1:]], cwd=BENCH, text=True,
                                    stdout=sink, stderr=subprocess.STDOUT)
        runs[name] = (proc, out)
    yield runs
    for proc, _ in runs.values():
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def finished(run: tuple[subprocess.Popen[str], Path]) -> str:
    proc, out = run
    proc.wait(timeout=580)
    output = out.read_text()
    assert proc.returncode == 0, output[-6000:]
    return output


# One sample per section, one browser of each kind: about 35 s quiet; minutes on a loaded box (load 40: 4 min).
@pytest.mark.timeout(600)
def test_benchmark_script_runs_on_a_tiny_setting(smoke_runs: dict[str, tuple[subprocess.Popen[str], Path]]) -> None:
    stdout = finished(smoke_runs["run"])
    for section in ("start-up", "MCP overhead", "throughput", "sessions", "egress policy cost", "guards"):
        assert section in stdout
    rows = json.loads((BENCH / "results" / "bench.json").read_text())["rows"]
    assert all(r["ratio"] is None or r["ratio"] > 0 for r in rows)
    assert {r["section"] for r in rows} >= {"startup", "overhead", "throughput", "sessions", "egress", "guards"}


@pytest.mark.timeout(600)  # two of everything: about 20 s on a quiet 2-core box, minutes on a loaded one
def test_durable_benchmark_runs_on_a_tiny_setting(smoke_runs: dict[str, tuple[subprocess.Popen[str], Path]]) -> None:
    # The smoke skips section 6 (restart after kill -9): test_durable_real.py kills a server mid-call and restores
    # its session in another, which is the same check without two more server starts.
    stdout = finished(smoke_runs["durable"])
    for section in ("1. memory", "2./3. resuming", "4. saving cost", "5. the spare", "summary:"):
        assert section in stdout
    assert "hibernated sessions add" in stdout and "closed next" in stdout
