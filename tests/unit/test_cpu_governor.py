"""The CPU governor (crawlkeeper.pressure): under CPU pressure with every slot busy the limiter shrinks, one
slot per step, down to its floor; as pressure falls it grows back and waiting calls start; running calls are
never stopped; readings come from Linux PSI's cumulative stall time."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from crawlkeeper.config import Settings
from crawlkeeper.fairness import FairLimiter
from crawlkeeper.pressure import Governor, cpu_floor, read_cpu_stall_us

PSI = "some avg10=97.06 avg60=98.55 avg300=93.62 total=16417315236\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"


def test_psi_total_is_read_and_absence_is_none(tmp_path: Path) -> None:
    (tmp_path / "cpu").write_text(PSI)
    assert read_cpu_stall_us(tmp_path / "cpu") == 16417315236.0
    assert read_cpu_stall_us(tmp_path / "missing") is None
    (tmp_path / "bad").write_text("some avg10=1 total=x\n")
    assert read_cpu_stall_us(tmp_path / "bad") is None


def test_pressure_is_the_stall_share_of_each_interval() -> None:
    readings = iter([0.0, 1_800_000.0, 2_000_000.0])  # stalled 1.8 s of 2 s, then 0.2 s of 2 s
    clock = iter([0.0, 2.0, 4.0])
    governor = Governor(FairLimiter(8, 64), ceiling=8, floor=2, read=lambda: next(readings),
                        clock=lambda: next(clock))
    assert governor.pressure() is None  # nothing to compare with yet
    assert governor.pressure() == pytest.approx(90.0)
    assert governor.pressure() == pytest.approx(10.0)


_CALLS: set[asyncio.Future[None]] = set()  # keeps the calls referenced while they run


async def hold(limiter: FairLimiter, n: int) -> list[asyncio.Future[None]]:
    """``n`` calls that take a slot (or queue for one) and keep it until their future is resolved."""
    releases: list[asyncio.Future[None]] = []

    async def call(release: asyncio.Future[None]) -> None:
        async with limiter.slot("c"):
            await release

    for _ in range(n):
        release: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        releases.append(release)
        task = asyncio.ensure_future(call(release))
        _CALLS.add(task)
        task.add_done_callback(_CALLS.discard)
    await asyncio.sleep(0)
    return releases


@pytest.mark.anyio
async def test_saturated_and_busy_it_shrinks_to_the_floor_and_grows_back() -> None:
    limiter = FairLimiter(4, 64)
    governor = Governor(limiter, ceiling=4, floor=2)
    releases = await hold(limiter, 6)
    assert (limiter.running, limiter.waiting) == (4, 2)
    assert [governor.step(95.0) for _ in range(4)] == [3, 2, 2, 2]  # one slot per step, never below the floor
    assert limiter.running == 4  # nothing running was stopped
    for release in releases[:2]:
        release.set_result(None)
    await asyncio.sleep(0.01)
    assert (limiter.running, limiter.waiting) == (2, 2)  # two finished; the queue waits for the smaller limit
    assert governor.step(60.0) == 2  # between the thresholds: keep
    assert governor.step(10.0) == 3
    await asyncio.sleep(0)
    assert (limiter.running, limiter.waiting) == (3, 1)  # a waiting call started as the limit grew
    assert [governor.step(10.0) for _ in range(3)] == [4, 4, 4]  # never above the configured limit
    for release in releases:
        if not release.done():
            release.set_result(None)


@pytest.mark.anyio
async def test_pressure_from_elsewhere_with_free_slots_keeps_the_limit() -> None:
    limiter = FairLimiter(4, 64)
    governor = Governor(limiter, ceiling=4, floor=2)
    releases = await hold(limiter, 1)
    assert governor.step(99.0) == 4  # our slots are not all in use: fewer would not help
    assert governor.step(None) == 4  # no reading: no change
    releases[0].set_result(None)


@pytest.mark.anyio
async def test_the_governor_gives_the_full_limit_back_when_stopped() -> None:
    limiter = FairLimiter(4, 64)
    stalls = iter(range(0, 10**12, 10**6))  # a second of stall per read: always saturated
    governor = Governor(limiter, ceiling=4, floor=2, read=lambda: float(next(stalls)))
    releases = await hold(limiter, 4)
    task = asyncio.ensure_future(governor.run(interval_s=0.001))
    for _ in range(200):
        await asyncio.sleep(0.002)
        if limiter.concurrency == 2:
            break
    assert limiter.concurrency == 2
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert limiter.concurrency == 4
    for release in releases:
        release.set_result(None)


def test_floor_is_one_slot_per_cpu_within_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert (cpu_floor(8), cpu_floor(1)) == (2, 1)
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert cpu_floor(8) == 8  # as many CPUs as slots: nothing to adapt


def test_floor_counts_a_cpu_per_remote_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    # two endpoints on a 2-CPU machine kept only 2 crawls, one per browser, each idle while its page was
    # processed here: the floor is this machine's CPUs plus one per endpoint, within the limit
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert cpu_floor(8, endpoints=2) == 4
    assert cpu_floor(8, endpoints=10) == 8
    assert cpu_floor(3, endpoints=2) == 3


def test_an_apps_governor_counts_its_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    from crawlkeeper.config import Settings

    monkeypatch.setattr("os.cpu_count", lambda: 2)
    local = Governor.for_settings(FairLimiter(8, 64), Settings())
    fleet = Governor.for_settings(FairLimiter(8, 64), Settings.model_validate(
        {"browser": {"endpoints": ["ws://127.0.0.1:3000/pw", "cdp+http://127.0.0.1:9222"]}}))
    cdp = Governor.for_settings(FairLimiter(8, 64), Settings.model_validate(
        {"browser": {"cdp_url": "http://127.0.0.1:9222"}}))
    assert (local.floor, local.ceiling) == (2, 8)
    assert (fleet.floor, fleet.ceiling) == (4, 8)
    assert cdp.floor == 3  # cdp_url is one endpoint


def test_adapt_to_cpu_is_on_by_default_and_can_be_switched_off(tmp_path: Any) -> None:
    from crawlkeeper.config import load_config
    from crawlkeeper.errors import ConfigError

    assert Settings().limits.adapt_to_cpu is True
    path = tmp_path / "c.toml"
    path.write_text("[limits]\nadapt_to_cpu = false\n")
    assert load_config(path, environ={}).settings.limits.adapt_to_cpu is False
    path.write_text("[limits]\nadapt_to_cpu = \"sometimes\"\n")
    with pytest.raises(ConfigError, match=r"c\.toml.*\[limits\] adapt_to_cpu"):
        load_config(path, environ={})
