"""The spare browser context (spare.py), per-object attachments that let closed contexts go (attached.py), and the
one-look-up check of whether a session is saved."""

from __future__ import annotations

import asyncio
import gc
import weakref
from pathlib import Path
from typing import Any

import pytest

from crawlkeeper import guard, headers
from crawlkeeper.attached import Attached
from crawlkeeper.spare import SpareContext
from crawlkeeper_plugins.statefile import StateFileStore

pytestmark = pytest.mark.anyio


class Ctx:
    def __init__(self, kwargs: dict[str, Any]) -> None:
        self.kwargs = kwargs
        self.closed = False

    async def close(self) -> None:
        self.closed = True

    def on(self, event: str, handler: Any) -> None:
        pass


class Maker:
    def __init__(self, delay_s: float = 0.0) -> None:
        self.made: list[Ctx] = []
        self.delay_s = delay_s

    async def __call__(self, kwargs: dict[str, Any]) -> Ctx:
        await asyncio.sleep(self.delay_s)
        ctx = Ctx(kwargs)
        self.made.append(ctx)
        return ctx


async def settle(spare: SpareContext) -> None:
    await asyncio.sleep(spare.delay_s + 0.05)


A = {"viewport": {"width": 1280, "height": 800}, "proxy": {"server": "http://127.0.0.1:1"}}
B = {"viewport": {"width": 400, "height": 800}, "proxy": {"server": "http://127.0.0.1:1"}}


async def test_the_spare_is_handed_out_once_and_made_again_in_the_background() -> None:
    make = Maker()
    spare = SpareContext(make, delay_s=0.01)
    assert await spare.take(A, 1) is None  # nothing made yet: the caller makes its own
    await settle(spare)
    assert len(make.made) == 1
    first = await spare.take(dict(A), 1)  # equal arguments, not the same dict
    assert first is make.made[0] and not first.closed
    await settle(spare)
    second = await spare.take(A, 1)
    assert second is make.made[1] and second is not first  # never the same context twice
    assert (spare.taken, spare.missed) == (2, 1)


async def test_other_arguments_or_another_browser_get_no_spare_and_the_old_one_is_closed() -> None:
    make = Maker()
    spare = SpareContext(make, delay_s=0.01)
    spare.prime(A, 1)
    await settle(spare)
    assert await spare.take(B, 1) is None  # another viewport: a context made for A would differ
    await settle(spare)
    assert make.made[0].closed
    assert make.made[1].kwargs == B  # the spare follows the latest arguments
    assert await spare.take(B, 2) is None  # a relaunched browser: the old spare died with the old one
    await settle(spare)
    assert make.made[1].closed


async def test_a_spare_being_made_is_waited_for_one_still_in_its_delay_is_not() -> None:
    make = Maker(delay_s=0.05)
    spare = SpareContext(make, delay_s=0.5)
    spare.prime(A, 1)  # no delay: Chromium is making it now
    await asyncio.sleep(0.01)
    got = await spare.take(A, 1)
    assert got is make.made[0]
    # The refill waits 0.5 s before asking the browser: a take now makes its own instead of waiting.
    assert await spare.take(A, 1) is None
    await asyncio.sleep(0.1)
    assert len(make.made) == 1  # the cancelled refill never asked for a context
    await spare.close()


@pytest.mark.parametrize("second", [A, B], ids=["same arguments", "other arguments"])
async def test_overlapping_takers_leave_no_context_nobody_holds(second: dict[str, Any]) -> None:
    make = Maker(delay_s=0.05)
    spare = SpareContext(make, delay_s=0.01)
    spare.prime(A, 1)
    await asyncio.sleep(0.01)  # Chromium is making it
    first = asyncio.ensure_future(spare.take(A, 1))  # waits for the spare being made
    await asyncio.sleep(0.01)
    assert await spare.take(second, 1) is None  # meanwhile another caller: no spare for it, a refill starts
    got = await first
    assert got is make.made[0]
    await asyncio.sleep(0.2)
    await spare.close()
    await asyncio.sleep(0.1)
    handed_out = {id(got)}
    open_ = [c for c in make.made if not c.closed and id(c) not in handed_out]
    assert not open_, f"{len(open_)} spare context(s) made, never handed out and never closed"


async def test_discard_and_close_leave_no_context_open() -> None:
    make = Maker(delay_s=0.05)
    spare = SpareContext(make, delay_s=0.0)
    spare.prime(A, 1)
    await asyncio.sleep(0.01)
    spare.discard()  # being made when the browser died: closed when it lands, never handed out
    await asyncio.sleep(0.1)
    assert make.made[0].closed
    spare.prime(A, 1)
    await asyncio.sleep(0.1)
    await spare.close()
    assert make.made[1].closed
    assert await spare.take(A, 1) is None


async def test_a_disabled_spare_makes_nothing() -> None:
    make = Maker()
    spare = SpareContext(make, enabled=False, delay_s=0.0)
    spare.prime(A, 1)
    assert await spare.take(A, 1) is None
    await asyncio.sleep(0.05)
    assert make.made == []


async def test_a_cancelled_taker_does_not_leak_the_spare() -> None:
    make = Maker(delay_s=0.1)
    spare = SpareContext(make, delay_s=0.0)
    spare.prime(A, 1)
    await asyncio.sleep(0.01)
    taker = asyncio.ensure_future(spare.take(A, 1))
    await asyncio.sleep(0.01)
    taker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await taker
    await asyncio.sleep(0.2)
    assert make.made[0].closed


def test_a_guarded_context_is_freed_with_its_guard() -> None:
    """A WeakKeyDictionary whose values held their keys kept every closed context (and its Playwright objects)
    alive for good: 50 hibernated sessions still held 50 contexts on the Python side."""
    ctx = Ctx({})
    guarded = guard.watch_context(ctx)
    assert guard.guard_of(ctx) is guarded
    alive = weakref.ref(ctx)
    del ctx, guarded
    gc.collect()
    assert alive() is None


def test_attached_values_need_no_dict_on_the_object() -> None:
    values: Attached[str] = Attached("test")

    class Slotted:
        __slots__ = ("__weakref__",)

    obj, plain = Slotted(), Ctx({})
    values[obj] = "a"
    values[plain] = "b"
    assert (values.get(obj), values.get(plain), values.get(Ctx({}))) == ("a", "b", None)
    assert headers._BY_CONTEXT.get(plain) is None


async def test_whether_a_session_is_saved_is_one_look_up(tmp_path: Path) -> None:
    from crawlkeeper.config import load_config
    from crawlkeeper.state import SessionKeeper

    store = StateFileStore(tmp_path / "state")
    listed = []
    real_list = store.list

    async def counting_list() -> list[str]:
        listed.append(1)
        return await real_list()

    store.list = counting_list  # type: ignore[method-assign]
    config_file = tmp_path / "crawlkeeper.toml"
    config_file.write_text("")
    keeper = SessionKeeper(load_config(config_file))
    keeper.store = store
    assert not await keeper.exists("gh")
    await store.save(keeper.key("gh"), b"blob")
    assert await keeper.exists("gh") and not await keeper.exists("other")
    assert listed == []  # never a listing of the whole folder

    class ListOnly:  # a third-party store without exists(): the listing answers
        description = "list only"

        async def list(self) -> list[str]:
            return ["local/gh"]

    keeper.store = ListOnly()  # type: ignore[assignment]
    assert await keeper.exists("gh") and not await keeper.exists("other")
