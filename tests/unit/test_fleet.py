"""Endpoints config and fleet placement, with fake endpoint backends (the real ones: test_fleet_real.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from crawlkeeper.config import BrowserSettings
from crawlkeeper.endpoints import Endpoint, mask_url, split_url, url_secrets
from crawlkeeper.errors import BrowserUnavailable
from crawlkeeper.fleet import FleetBackend
from crawlkeeper.options import ContextOptions


def test_endpoint_protocols() -> None:
    assert split_url("ws://a:3000/pw") == ("playwright", "ws://a:3000/pw")
    assert split_url("wss://a/pw?token=x") == ("playwright", "wss://a/pw?token=x")
    assert split_url("cdp+ws://b:9222/devtools/browser/1") == ("cdp", "ws://b:9222/devtools/browser/1")
    assert split_url("cdp+http://b:9222") == ("cdp", "http://b:9222")
    with pytest.raises(ValueError, match=r"cdp\+http://b:9222"):
        split_url("http://b:9222")
    with pytest.raises(ValueError, match="no known protocol"):
        split_url("ftp://b")


def test_tokens_are_masked_and_registered() -> None:
    url = "wss://chrome.example/pw?token=s3cr3t-token&stealth=1"
    assert mask_url(url) == "wss://chrome.example/pw?token=***&stealth=1"
    assert mask_url("ws://user:pa55@h:1/x") == "ws://user:***@h:1/x"
    assert url_secrets(url) == ["s3cr3t-token"]
    endpoint = Endpoint.parse({"url": url, "headers": {"Authorization": "Bearer hdr-secret"}, "max_sessions": 3})
    assert endpoint.name == "wss://chrome.example/pw?token=***&stealth=1" and endpoint.max_sessions == 3
    endpoint.register_secrets()
    from crawlkeeper.logs import scrub

    assert "s3cr3t-token" not in scrub(f"failed to connect to {url}")
    assert "hdr-secret" not in scrub("header Bearer hdr-secret")


def test_config_forms_and_errors() -> None:
    settings = BrowserSettings.model_validate(
        {"endpoints": ["ws://127.0.0.1:1/pw", {"url": "cdp+http://127.0.0.1:2", "max_sessions": 2}]}
    )
    fleet = settings.fleet()
    assert [(e.protocol, e.connect_url, e.max_sessions) for e in fleet] == [
        ("playwright", "ws://127.0.0.1:1/pw", None), ("cdp", "http://127.0.0.1:2", 2)]
    assert BrowserSettings.model_validate({"cdp_url": "http://127.0.0.1:9"}).fleet()[0].protocol == "cdp"
    with pytest.raises(ValueError, match="either cdp_url or endpoints"):
        BrowserSettings.model_validate({"cdp_url": "http://x:1", "endpoints": ["ws://y:1"]})
    with pytest.raises(ValueError, match="listed twice"):
        BrowserSettings.model_validate({"endpoints": ["ws://y:1", "ws://y:1"]})
    with pytest.raises(ValueError, match="max_sessions"):
        BrowserSettings.model_validate({"endpoints": [{"url": "ws://y:1", "max_sessions": 0}]})


class FakeContext:
    def __init__(self) -> None:
        self.handlers: list[Callable[[Any], None]] = []

    def on(self, event: str, handler: Callable[[Any], None]) -> None:
        assert event == "close"
        self.handlers.append(handler)

    async def close(self) -> None:
        for handler in self.handlers:
            handler(self)


class FakeEndpointBackend:
    """What the fleet uses of a ChromiumBackend."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.up = True
        self.connected = False
        self.starts = 0
        self.generation = 0
        self.proxy_url: str | None = None
        self.crash: Callable[[int], None] | None = None

    @property
    def alive(self) -> bool:
        return self.connected

    def on_crash(self, callback: Callable[[int], None]) -> None:
        self.crash = callback

    async def start(self) -> None:
        self.starts += 1
        if not self.up:
            raise BrowserUnavailable(f"the browser endpoint {self.endpoint.name} is unreachable: refused")
        if not self.connected:
            self.generation += 1
        self.connected = True

    async def new_context(self, options: ContextOptions, *, proxy_url: str | None = None) -> FakeContext:
        await self.start()
        return FakeContext()

    def die(self) -> None:
        self.connected = self.up = False
        assert self.crash is not None
        self.crash(1)

    async def close(self) -> None:
        self.connected = False


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def make_fleet(*limits: int | None) -> tuple[FleetBackend, list[FakeEndpointBackend], Clock]:
    endpoints = [Endpoint.parse({"url": f"ws://127.0.0.1:{9000 + i}/pw", "max_sessions": n})
                 for i, n in enumerate(limits)]
    clock = Clock()
    fleet = FleetBackend(endpoints, clock=clock)
    fakes = []
    for member in fleet.members:
        fake = FakeEndpointBackend(member.endpoint)
        member.backend = fake  # type: ignore[assignment]
        fake.on_crash(lambda _g, m=member: fleet._lost(m))
        fakes.append(fake)
    return fleet, fakes, clock


@pytest.mark.anyio
async def test_placement_fewest_contexts_then_max_sessions() -> None:
    fleet, _fakes, _ = make_fleet(None, 2)
    contexts = [await fleet.new_session_context(ContextOptions()) for _ in range(4)]
    assert fleet.active_sessions() == {"ws://127.0.0.1:9000/pw": 2, "ws://127.0.0.1:9001/pw": 2}
    assert fleet.session_counts() == fleet.active_sessions()
    assert [fleet.endpoint_of(c) for c in contexts] == ["ws://127.0.0.1:9000/pw", "ws://127.0.0.1:9001/pw"] * 2
    fifth = await fleet.new_session_context(ContextOptions())  # the second endpoint is full (max_sessions = 2)
    assert fleet.endpoint_of(fifth) == "ws://127.0.0.1:9000/pw"
    await contexts[1].close()  # a context closing frees its place
    assert fleet.active_sessions()["ws://127.0.0.1:9001/pw"] == 1
    assert fleet.session_counts()["ws://127.0.0.1:9001/pw"] == 1
    assert fleet.endpoint_of(await fleet.new_session_context(ContextOptions())) == "ws://127.0.0.1:9001/pw"


@pytest.mark.anyio
async def test_max_sessions_counts_sessions_not_session_less_contexts() -> None:
    fleet, _fakes, _ = make_fleet(1, 1)
    pooled = [await fleet.new_context(ContextOptions()) for _ in range(4)]  # session-less crawls: not counted
    assert fleet.session_counts() == {"ws://127.0.0.1:9000/pw": 0, "ws://127.0.0.1:9001/pw": 0}
    assert sorted(fleet.endpoint_of(c) or "" for c in pooled) == ["ws://127.0.0.1:9000/pw"] * 2 + [
        "ws://127.0.0.1:9001/pw"] * 2
    sessions = [await fleet.new_session_context(ContextOptions()) for _ in range(2)]  # room although 4 are open
    assert {fleet.endpoint_of(c) for c in sessions} == {"ws://127.0.0.1:9000/pw", "ws://127.0.0.1:9001/pw"}
    with pytest.raises(BrowserUnavailable, match="every browser endpoint is full of sessions"):
        await fleet.new_session_context(ContextOptions())
    assert fleet.endpoint_of(await fleet.new_context(ContextOptions())) is not None  # crawls still go there


@pytest.mark.anyio
async def test_full_fleet_says_so() -> None:
    fleet, _, _ = make_fleet(1)
    await fleet.new_session_context(ContextOptions())
    with pytest.raises(BrowserUnavailable, match="every browser endpoint is full"):
        await fleet.new_session_context(ContextOptions())


@pytest.mark.anyio
async def test_dead_endpoint_is_skipped_probed_with_backoff_and_rejoins() -> None:
    fleet, fakes, clock = make_fleet(None, None)
    lost: list[int] = []
    fleet.on_crash(lost.append)
    await fleet.start()
    on_second = await fleet.new_context(ContextOptions())
    on_second = await fleet.new_context(ContextOptions())
    generation = fleet.generation_of(on_second)
    assert fleet.is_current(generation) and fleet.endpoint_of(on_second) == "ws://127.0.0.1:9001/pw"
    fakes[1].die()
    assert lost == [generation] and fleet.generation == 2 and not fleet.is_current(generation)
    assert fleet.context_lost(on_second) and fleet.lost_with(generation, lost[0])
    assert "ws://127.0.0.1:9001/pw went down" in fleet.crash_note()
    placed = [fleet.endpoint_of(await fleet.new_context(ContextOptions())) for _ in range(3)]
    assert placed == ["ws://127.0.0.1:9000/pw"] * 3
    starts = fakes[1].starts
    clock.now += 0.6  # past the first back-off: probed once, still down, next back-off doubles
    await fleet.new_context(ContextOptions())
    assert fakes[1].starts == starts + 1
    clock.now += 0.6
    await fleet.new_context(ContextOptions())
    assert fakes[1].starts == starts + 1  # within the doubled back-off: not probed
    fakes[1].up = True
    clock.now += 1.0
    assert fleet.endpoint_of(await fleet.new_context(ContextOptions())) == "ws://127.0.0.1:9001/pw"


@pytest.mark.anyio
async def test_all_down_fails_fast_naming_them() -> None:
    fleet, fakes, _ = make_fleet(None, None)
    for fake in fakes:
        fake.up = False
    with pytest.raises(BrowserUnavailable) as caught:
        await fleet.start()
    message = str(caught.value)
    assert "ws://127.0.0.1:9000/pw" in message and "ws://127.0.0.1:9001/pw" in message
    assert "no browser endpoint is reachable" in message
    with pytest.raises(BrowserUnavailable, match="no browser endpoint is reachable"):
        await fleet.new_context(ContextOptions())  # within the back-off: no probe, at once


@pytest.mark.anyio
async def test_the_core_asks_for_session_contexts_for_sessions_only(crawlkeeper_app: Any,
                                                                    crawlkeeper_browser: Any) -> None:
    made: list[str] = []
    plain = crawlkeeper_browser.new_context

    async def new_session_context(options: ContextOptions, *, proxy_url: str | None = None) -> Any:
        made.append("session")
        return await plain(options, proxy_url=proxy_url)

    crawlkeeper_browser.new_session_context = new_session_context
    crawlkeeper_browser.add_page("https://example.com/*", "<title>Home</title><p>Welcome to the home page here.</p>")
    await crawlkeeper_app.create_session(session_id="s")
    await crawlkeeper_app.crawl("https://example.com/")  # session-less: a plain (pooled) context
    assert made == ["session"]
    assert await crawlkeeper_app.hibernate(crawlkeeper_app.sessions.get("s"))
    assert (await crawlkeeper_app.crawl("https://example.com/", session_id="s"))["restored"] is True
    assert made == ["session", "session"]  # a restore makes a session context too
    await crawlkeeper_app.shutdown()


@pytest.mark.anyio
async def test_sessions_spread_by_sessions_not_by_idle_pooled_contexts() -> None:
    fleet, _fakes, _ = make_fleet(None, None)
    for _ in range(3):  # session-less crawls' idle pooled contexts on the first endpoint (a warm-up leaves one)
        await fleet.new_context(ContextOptions())
    fleet.members[1].contexts.clear()  # as if the second one's pooled context had closed
    sessions = [await fleet.new_session_context(ContextOptions()) for _ in range(2)]
    assert sorted(fleet.endpoint_of(c) or "" for c in sessions) == ["ws://127.0.0.1:9000/pw", "ws://127.0.0.1:9001/pw"]
    assert fleet.session_counts() == {"ws://127.0.0.1:9000/pw": 1, "ws://127.0.0.1:9001/pw": 1}
