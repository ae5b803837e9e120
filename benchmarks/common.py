"""Shared helpers for the benchmarks: timing stats, process-tree memory, MCP server params, a local site."""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

# The test-only sites (``sites.ReposTestSite``, ``ExtraSite`` ...) live in tests/sites.py, never in the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
os.environ.setdefault("CRAWL4AI_NO_CLOUD_NOTICE", "1")  # crawl4ai prints a banner to stdout otherwise


@dataclass
class Stats:
    name: str
    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def row(self, baseline: Stats | None = None, unit: str = "ms", scale: float = 1000.0) -> str:
        lo, med, hi = min(self.samples) * scale, self.median * scale, max(self.samples) * scale
        ratio = f"{self.median / baseline.median:6.2f}x {baseline.name}" if baseline else "  (baseline)"
        return f"  {self.name:<44} min {lo:8.1f} {unit}  median {med:8.1f} {unit}  max {hi:8.1f} {unit}  {ratio}"


async def timed(n: int, fn: Callable[[], Awaitable[object]], name: str, warmup: int = 1) -> Stats:
    for _ in range(warmup):
        await fn()
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - started)
    return Stats(name, samples)


def tree_rss_mb(pid: int, kind: str = "rss") -> float:
    """Memory of a process and all its descendants, in MB.

    ``rss`` (what the issue asks for; shared pages counted once per process), ``uss`` (memory unique to the
    tree's processes: what closing them would free, and stable when other browsers run on the machine) or
    ``pss``. Per-session costs use USS deltas: RSS would count shared libraries again for every renderer.
    """
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for proc in procs:
        try:
            info = proc.memory_full_info() if kind != "rss" else proc.memory_info()
            total += getattr(info, kind)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total / 1_048_576


def chromium_count(pid: int) -> int:
    try:
        return sum(1 for p in psutil.Process(pid).children(recursive=True) if "chrom" in p.name().lower())
    except psutil.NoSuchProcess:
        return 0


def write_config(folder: Path, extra: str = "") -> Path:
    path = folder / "crawlkeeper.toml"
    # Saved sessions and their key stay in the benchmark's temporary folder, never in the user's.
    path.write_text('[security]\nallow_private = ["127.0.0.1"]\n[sessions]\nmax_sessions = 200\n'
                    'key_file = "state.key"\n[plugins.statefile]\ndir = "state"\n' + extra)
    (folder / "profiles").mkdir(exist_ok=True)
    return path


def server_params(config: Path):  # type: ignore[no-untyped-def]
    from mcp import StdioServerParameters

    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "crawlkeeper", "serve", "--config", str(config)],
        env={**os.environ, "CRAWLKEEPER_LOG_LEVEL": "WARNING"},
    )


def temp_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="crawlkeeper-bench-"))


async def unguarded_app(config: Path):  # type: ignore[no-untyped-def]
    """A started app that crawls as crawlkeeper did before the hostile-page guards: its pooled contexts are
    reused as they are (no park, no cookie/storage wipe) and no download is metered. Returns the app (shut it
    down) and ``crawl(url)``. The baseline of the guards' cost in run.py and bench_secrets.py."""
    from crawlkeeper import guard
    from crawlkeeper.runtime import build_app

    app = build_app(config)

    async def reuse_as_is(slot: object) -> bool:
        return True  # no park, no wipe: the next call sees what this one left

    async def no_meter(page: object) -> None:
        return None

    app.pool._wipe = reuse_as_is  # type: ignore[method-assign]
    await app.startup()

    async def crawl(url: str) -> None:
        real = guard.meter_page
        guard.meter_page = no_meter  # type: ignore[assignment]
        try:
            await app.crawl(url)
        finally:
            guard.meter_page = real

    return app, crawl
