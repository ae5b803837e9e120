"""The browser's memory as a whole: the renderer JavaScript heap limit and a process-tree watchdog that kills the
one renderer using the most when the tree passes ``[limits] max_browser_mb`` (re-exported by ``guard``)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("crawlkeeper.guard")


def js_heap_mb(max_browser_mb: int) -> int:
    """The V8 old-space limit per renderer: a quarter of the browser's budget, 128-2048 MB. A page that
    allocates past it crashes its own renderer (the crawl fails), not the machine."""
    return max(128, min(2048, max_browser_mb // 4))


def memory_args(max_browser_mb: int, extra: list[str]) -> list[str]:
    """Chromium flags enforcing ``max_browser_mb`` (unless the operator set ``--js-flags`` themselves)."""
    if any(arg.startswith("--js-flags") for arg in extra):
        return []
    return [f"--js-flags=--max-old-space-size={js_heap_mb(max_browser_mb)}"]


def _proc_mb(proc: Any) -> float:
    """A process's proportional memory (PSS: shared pages split between their users) in MB; RSS if the
    kernel has no ``smaps_rollup``. RSS would count Chromium's shared libraries once per renderer."""
    try:
        with open(f"/proc/{proc.pid}/smaps_rollup", encoding="ascii") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    try:
        return float(proc.memory_info().rss) / 1_048_576
    except Exception:
        return 0.0


class MemoryWatchdog:
    """Keeps the browser's process tree under ``max_mb``: when it is over, the renderer using the most
    memory is killed. Its pages crash (their crawls fail with a clear error and are replaced); the browser,
    other contexts' renderers and the server live on."""

    def __init__(self, root_pid: int, max_mb: int, *, interval_s: float = 0.25) -> None:
        self.root_pid = root_pid
        self.max_mb = max_mb
        self.interval_s = interval_s
        self.kills: list[tuple[float, int, float]] = []  # (monotonic time, pid, MB)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def killed_recently(self, within_s: float = 10.0) -> bool:
        import time

        return bool(self.kills) and time.monotonic() - self.kills[-1][0] < within_s

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.check)
            except Exception as exc:  # never let a /proc hiccup stop the watchdog
                log.debug("memory watchdog: %s", exc)
            await asyncio.sleep(self.interval_s)

    def check(self) -> int | None:
        """One sample; the pid of the renderer it killed, if any."""
        import time

        import psutil

        try:
            root = psutil.Process(self.root_pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return None
        sizes = [(p, _proc_mb(p)) for p in procs]
        total = sum(mb for _, mb in sizes)
        if total <= self.max_mb:
            return None
        renderers = [(p, mb) for p, mb in sizes if _is_renderer(p)]
        if not renderers:
            return None
        victim, mb = max(renderers, key=lambda item: item[1])
        try:
            victim.kill()
        except psutil.Error:
            return None
        self.kills.append((time.monotonic(), victim.pid, mb))
        del self.kills[:-20]
        log.warning("the browser used %.0f MB, above [limits] max_browser_mb = %d: stopped the renderer using "
                    "the most (%.0f MB); its pages fail, everything else keeps running", total, self.max_mb, mb)
        return victim.pid


def _is_renderer(proc: Any) -> bool:
    try:
        return "--type=renderer" in proc.cmdline()
    except Exception:
        return False


def find_browser_process(before: set[int]) -> int | None:
    """The pid of the Chromium browser process this process launched just now (not in ``before``)."""
    try:
        import psutil

        for proc in psutil.Process().children(recursive=True):
            if proc.pid in before:
                continue
            cmdline = proc.cmdline()
            if cmdline and not any(a.startswith("--type=") for a in cmdline) and "--remote-debugging-pipe" in cmdline:
                return proc.pid
    except Exception as exc:
        log.debug("cannot find the browser process: %s", exc)
    return None


def browser_processes() -> set[int]:
    """Pids of the Chromium browser processes this process launched so far."""
    try:
        import psutil

        return {p.pid for p in psutil.Process().children(recursive=True)
                if "--remote-debugging-pipe" in (p.cmdline() or [])}
    except Exception:
        return set()
