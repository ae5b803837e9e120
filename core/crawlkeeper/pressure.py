"""Fitting the number of running crawls to the CPU the machine has left: extra calls queue instead of starving.

A call's ``timeout_s`` starts when it gets its crawl slot; time in the queue never counts. But the crawls that
hold slots share the CPU (Chromium's renderers, Playwright's driver, crawl4ai's page processing): on a
saturated 2-core machine 8 crawls at once each take about 8 times as long as one, for no more throughput, and
their timeouts fire although nothing is wrong with the pages (issue 16: 20 clients on 2 busy cores, half of
them failed on "timed out after 30 s"). The :class:`Governor` watches the kernel's CPU pressure (Linux PSI,
``/proc/pressure/cpu``: the share of time runnable tasks waited for a CPU) and, while it is high and every slot
is in use, lowers the number of slots one at a time down to a floor (one per CPU the crawls run on); as the pressure
falls it gives them back up to ``[limits] max_concurrent_crawls``. The calls above the lowered limit wait in
the queue, where no timer runs, and are served in the same fair order. Where PSI is not available (not Linux,
or a kernel without it) nothing changes. ``[limits] adapt_to_cpu = false`` switches it off.

With ``[browser] endpoints`` (``cdp_url`` counts as one) a crawl alternates between its browser, which renders
the page, and this process, which processes it; with one crawl per browser, each browser idles during this
process's part. The floor then adds one slot per endpoint to this machine's CPUs, so every browser can have a
second crawl in flight. Two endpoints on a 2-CPU machine, both on this machine (where the pressure includes
them): the governor had gone down to 2 crawls, the CPUs were 80 % busy, and two endpoints gave 1.24-1.41x one
endpoint's throughput in ``benchmarks/fleet.py`` with each pinned to a CPU; with 4 crawls the CPUs were busy and
it gave 1.42-1.65x. Endpoints on other machines add CPUs this machine's pressure does not see at all.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .fairness import FairLimiter

if TYPE_CHECKING:
    from .config import Settings

log = logging.getLogger("crawlkeeper.limits")

PSI_CPU = Path("/proc/pressure/cpu")
#: Above this share of time with tasks waiting for a CPU, and with every slot in use: one slot fewer.
HIGH_PRESSURE = 80.0
#: Below it: one slot more (between the two: keep the limit, so it does not swing with every reading).
LOW_PRESSURE = 40.0
INTERVAL_S = 2.0


def read_cpu_stall_us(path: Path = PSI_CPU) -> float | None:
    """Microseconds during which some runnable task waited for a CPU, since boot (PSI ``some ... total=``),
    or None where the kernel does not report it."""
    try:
        text = path.read_text(encoding="ascii")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("some "):
            for field in line.split()[1:]:
                key, _, value = field.partition("=")
                if key == "total":
                    try:
                        return float(value)
                    except ValueError:
                        return None
    return None


def cpu_floor(ceiling: int, endpoints: int = 0) -> int:
    """The fewest slots the governor leaves, never above the configured limit: this machine's CPUs (at least 2)
    plus one per remote browser endpoint (``endpoints``), so that each browser can have a crawl in flight while
    another crawl's page is processed here (see the module docstring)."""
    return min(ceiling, max(2, os.cpu_count() or 1) + max(0, endpoints))


class Governor:
    """Resizes ``limiter`` between ``floor`` and ``ceiling`` from CPU-stall readings (see the module docstring).

    ``read`` returns the cumulative stall time in microseconds (or None); the pressure of an interval is its
    growth over the interval's wall time, so a change shows at the next step rather than after PSI's own
    10-second average catches up.
    """

    def __init__(
        self, limiter: FairLimiter, *, ceiling: int, floor: int,
        read: Callable[[], float | None] = read_cpu_stall_us, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limiter = limiter
        self.ceiling = ceiling
        self.floor = min(floor, ceiling)
        self.read = read
        self.clock = clock
        self._last: tuple[float, float] | None = None  # (wall clock s, stall total us)

    @classmethod
    def for_settings(cls, limiter: FairLimiter, settings: Settings) -> Governor:
        """The governor of an app with these settings: ``[limits] max_concurrent_crawls`` slots at most, and at
        least this machine's CPUs plus one per remote browser (``[browser] endpoints``, or ``cdp_url``)."""
        ceiling = settings.limits.max_concurrent_crawls
        return cls(limiter, ceiling=ceiling, floor=cpu_floor(ceiling, len(settings.browser.fleet())))

    @property
    def available(self) -> bool:
        return self.read() is not None

    def pressure(self) -> float | None:
        """Percent of the time since the previous call during which a task waited for a CPU (None at first)."""
        total = self.read()
        now = self.clock()
        if total is None:
            return None
        last, self._last = self._last, (now, total)
        if last is None or now <= last[0]:
            return None
        return min(100.0, max(0.0, (total - last[1]) / ((now - last[0]) * 1e6) * 100))

    def step(self, pressure: float | None) -> int:
        """Apply one reading; returns the number of slots now."""
        limiter = self.limiter
        size = limiter.concurrency
        if pressure is None:
            return size
        if pressure >= HIGH_PRESSURE and limiter.running >= size and size > self.floor:
            size -= 1  # every slot busy and the CPUs saturated: one crawl fewer at a time
        elif pressure <= LOW_PRESSURE and size < self.ceiling:
            size += 1
        if size != limiter.concurrency:
            log.debug("crawl slots %d -> %d (CPU pressure %.0f %%)", limiter.concurrency, size, pressure)
            limiter.resize(size)
        return size

    async def run(self, interval_s: float = INTERVAL_S) -> None:
        """Step every ``interval_s`` until cancelled; gives the limiter its full size back when it ends."""
        try:
            self.pressure()
            while True:
                await asyncio.sleep(interval_s)
                self.step(self.pressure())
        finally:
            self.limiter.resize(self.ceiling)


__all__ = ["Governor", "cpu_floor", "read_cpu_stall_us"]
