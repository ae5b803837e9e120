"""Where a browser endpoint's CPU goes, by process kind: what ``fleet.py`` prints per page of ``crawl_many``.

A ``playwright launch-server`` tree is its node process (every protocol message is relayed through it), the
Chromium browser process, its renderers (those alive, and those already exited: their CPU is in the zygote's
reaped-children times), the GPU process (compositing, software here) and utility processes (network service,
storage). Renderer *starts* are counted from ``--renderer-client-id``, which Chromium numbers up for every
renderer process it creates: the highest live id before and after a run (a lower bound: a renderer started and
gone again before the end is counted only if a later one exists).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import psutil


def kind_of(cmdline: list[str]) -> str:
    """``node``, ``browser``, ``renderer``, ``zygote``, ``gpu-process``, ``utility`` (or the program's name)."""
    if not cmdline:
        return "?"
    if "node" in cmdline[0].rsplit("/", 1)[-1] or any("launch-server" in a or "run-server" in a for a in cmdline[:4]):
        return "node"
    for arg in cmdline:
        if arg.startswith("--type="):
            return arg[len("--type="):]
    return "browser" if "chrom" in cmdline[0] else cmdline[0].rsplit("/", 1)[-1]


@dataclass
class Sample:
    """CPU seconds by process kind of one process tree, and the highest renderer number seen."""

    cpu: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    renderer_id: int = 0

    @classmethod
    def of(cls, root_pid: int) -> Sample:
        sample = cls()
        try:
            root = psutil.Process(root_pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return sample
        for proc in procs:
            try:
                cmdline = proc.cmdline()
                times = proc.cpu_times()
            except psutil.Error:
                continue
            kind = kind_of(cmdline)
            sample.cpu[kind] += times.user + times.system
            reaped = times.children_user + times.children_system
            if reaped and kind == "zygote":  # renderers that exited: the zygote forked them
                sample.cpu["renderer"] += reaped
            elif reaped:
                sample.cpu[kind] += reaped
            for arg in cmdline:
                if arg.startswith("--renderer-client-id="):
                    sample.renderer_id = max(sample.renderer_id, int(arg.split("=", 1)[1]))
        return sample


def difference(before: list[Sample], after: list[Sample]) -> tuple[dict[str, float], int]:
    """CPU seconds by kind, and renderers started, summed over endpoints between two samples of each."""
    cpu: dict[str, float] = defaultdict(float)
    started = 0
    for b, a in zip(before, after, strict=True):
        for kind in set(a.cpu) | set(b.cpu):
            cpu[kind] += max(0.0, a.cpu.get(kind, 0.0) - b.cpu.get(kind, 0.0))
        started += max(0, a.renderer_id - b.renderer_id)
    return dict(cpu), started


def breakdown(cpu: dict[str, float], pages: int) -> str:
    """``browser 120 ms, renderer 150 ms, ...`` per page, largest first."""
    parts = sorted(((v, k) for k, v in cpu.items() if v * 1000 / pages >= 0.5), reverse=True)
    return ", ".join(f"{k} {v * 1000 / pages:.0f}" for v, k in parts) + " ms"
