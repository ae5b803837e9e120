"""The HTTP transport's parts without a network: the token store, the crawlkeeper_verify_token hook,
session ownership by principal, fair sharing of crawl slots, and the Gate (Host, Origin, size, health,
access log) in front of a stand-in app."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from crawlkeeper import ConfigError, Principal, SessionError, hookimpl
from crawlkeeper.calls import CallInfo, ClientGone, unless_gone
from crawlkeeper.config import ServerSettings
from crawlkeeper.errors import BusyError
from crawlkeeper.fairness import FairLimiter
from crawlkeeper.http import Gate, HookTokenVerifier, allowed_hosts, allowed_origins
from crawlkeeper.principal import LOCAL
from crawlkeeper_plugins.tokens import TokenStore

SITE = "https://example.com"
PAGE = "<html><head><title>Home</title></head><body><p>Welcome home.</p></body></html>"
ALICE = Principal(id="token:alice", name="alice")
BOB = Principal(id="token:bob", name="bob")
ROOT = Principal(id="token:root", name="root", admin=True)


# -- the token store -------------------------------------------------------------------------------


def test_tokens_are_stored_as_hashes_in_a_0600_file(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "conf" / "tokens.json")
    token = store.add("alice")
    admin = store.add("root", admin=True)
    text = store.path.read_text()
    assert token not in text and admin not in text
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert [(r["name"], r["admin"], r["last_used_at"]) for r in store.list()] == [
        ("alice", False, None), ("root", True, None)]
    assert "hash" not in json.dumps(store.list())
    entry = store.verify(token)
    assert entry is not None and entry.principal() == Principal(id="token:alice", name="alice", admin=False)
    assert store.verify(admin).principal().admin is True  # type: ignore[union-attr]
    assert store.verify(token + "x") is None
    assert store.verify("") is None


def test_names_are_unique_and_plain(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    store.add("alice")
    with pytest.raises(ConfigError, match="exists; revoke it first"):
        store.add("alice")
    with pytest.raises(ConfigError, match="invalid token name"):
        store.add("al ice")


def test_a_revoke_by_another_process_is_seen_on_the_next_verification(tmp_path: Path) -> None:
    server_side = TokenStore(tmp_path / "tokens.json")
    cli_side = TokenStore(tmp_path / "tokens.json")
    token = cli_side.add("alice")
    assert server_side.verify(token) is not None
    assert cli_side.revoke("alice") is True
    assert server_side.verify(token) is None
    assert cli_side.revoke("alice") is False


def test_recording_last_use_never_resurrects_a_revoked_token(tmp_path: Path) -> None:
    server_side = TokenStore(tmp_path / "tokens.json")
    cli_side = TokenStore(tmp_path / "tokens.json")
    alice, bob = cli_side.add("alice"), cli_side.add("bob")
    assert server_side.verify(alice) and server_side.verify(bob)
    cli_side.revoke("alice")
    server_side.flush()  # writes "last used" for alice and bob: alice must stay revoked
    rows = {r["name"]: r for r in cli_side.list()}
    assert set(rows) == {"bob"}
    assert rows["bob"]["last_used_at"] is not None
    assert server_side.verify(alice) is None


# -- the hook -------------------------------------------------------------------------------------


class StaticVerifier:
    @hookimpl
    def crawlkeeper_verify_token(self, token: str) -> Principal | None:
        return ALICE if token == "let-alice-in" else None


class BrokenVerifier:
    @hookimpl
    def crawlkeeper_verify_token(self, token: str) -> Principal | None:
        raise ValueError(f"cannot parse {token}")


@pytest.mark.anyio
async def test_verify_token_asks_plugins_and_the_tokens_plugin(crawlkeeper_app: Any,
                                                               crawlkeeper_register: Any) -> None:
    crawlkeeper_register(StaticVerifier(), name="static")
    verifier = HookTokenVerifier(crawlkeeper_app)
    found = await verifier.verify_token("let-alice-in")
    assert found is not None and found.principal == ALICE and found.client_id == "token:alice"  # type: ignore[attr-defined]
    assert await verifier.verify_token("nobody") is None
    token = crawlkeeper_app.pm.get_plugin("tokens").store.add("carol")
    carol = await verifier.verify_token(token)
    assert carol is not None and carol.principal.name == "carol"  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_a_broken_verifier_refuses_and_never_logs_the_token(crawlkeeper_app: Any, crawlkeeper_register: Any,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    crawlkeeper_register(BrokenVerifier(), name="broken")
    with caplog.at_level(logging.ERROR):
        assert await HookTokenVerifier(crawlkeeper_app).verify_token("secret-token-value-123") is None
    assert "broken" in caplog.text and "ValueError" in caplog.text
    assert "secret-token-value-123" not in caplog.text


async def _no_robots(url: str) -> Any:
    from crawlkeeper.robots import RobotsFile

    return RobotsFile(status=404)


# -- ownership ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_sessions_belong_to_their_principal(crawlkeeper_app: Any, crawlkeeper_browser: Any) -> None:
    crawlkeeper_browser.add_page(f"{SITE}/*", PAGE)
    app = crawlkeeper_app
    await app.create_session(session_id="work", principal=ALICE)
    await app.crawl(f"{SITE}/", session_id="work", principal=ALICE)
    with pytest.raises(SessionError) as theirs:
        await app.crawl(f"{SITE}/", session_id="work", principal=BOB)
    with pytest.raises(SessionError) as never:
        await app.crawl(f"{SITE}/", session_id="nope", principal=BOB)
    assert str(theirs.value).replace("'work'", "'X'") == str(never.value).replace("'nope'", "'X'")

    async def work(page: Any, options: Any) -> str:  # what screenshot and extract run through run_on_page
        return "loaded"

    with pytest.raises(SessionError, match="unknown session"):
        await app.run_on_page(f"{SITE}/", work, session_id="work", principal=BOB)
    assert (await app.run_on_page(f"{SITE}/", work, session_id="work", principal=ALICE))[0] == "loaded"
    from crawlkeeper.site_crawl import crawl_site

    with pytest.raises(SessionError, match="unknown session"):
        await crawl_site(app, f"{SITE}/", session_id="work", principal=BOB, max_pages=1)
    site = await crawl_site(app, f"{SITE}/", session_id="work", principal=ALICE, max_pages=1,
                            robots_fetcher=_no_robots)
    assert site["pages"] and "error" not in site["pages"][0], site
    await app.create_session(session_id="work", principal=BOB)  # ids are per client
    assert [s["session_id"] for s in await app.list_sessions(principal=BOB)] == ["work"]
    assert await app.list_sessions() == []  # the local user (stdio) has none of these
    with pytest.raises(SessionError, match="admin"):
        await app.list_sessions(principal=BOB, all_clients=True)
    listed = await app.list_sessions(principal=ROOT, all_clients=True)
    assert sorted(s["owner"] for s in listed) == ["token:alice", "token:bob"]
    with pytest.raises(SessionError, match="several clients"):
        await app.close_session("work", principal=ROOT)
    with pytest.raises(SessionError, match="admin"):
        await app.close_session("work", principal=BOB, owner="token:alice")
    await app.close_session("work", principal=ROOT, owner="token:alice")
    with pytest.raises(SessionError, match="was closed"):
        await app.crawl(f"{SITE}/", session_id="work", principal=ALICE)
    await app.close_session("work", principal=ROOT)  # only bob's is left: the id alone is enough
    assert await app.list_sessions(principal=ROOT, all_clients=True) == []
    await app.shutdown()


@pytest.mark.anyio
async def test_sessions_per_client_are_capped(crawlkeeper_app: Any) -> None:
    crawlkeeper_app.sessions.max_per_owner = 2
    await crawlkeeper_app.create_session(principal=ALICE)
    await crawlkeeper_app.create_session(principal=ALICE)
    with pytest.raises(SessionError, match="max_sessions_per_client"):
        await crawlkeeper_app.create_session(principal=ALICE)
    await crawlkeeper_app.create_session(principal=BOB)
    await crawlkeeper_app.shutdown()


def test_the_local_principal_is_the_stdio_user() -> None:
    assert LOCAL.id == "local" and LOCAL.admin
    with pytest.raises(ValueError):
        Principal(id="")
    assert Principal(id="x").name == "x"
    assert "token" not in repr(Principal(id="sub-1", scopes=["read"]))


# -- fair sharing ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_free_slots_go_round_robin_across_clients() -> None:
    limiter = FairLimiter(2, 1000, per_client=2, per_client_queued=1000)
    order: list[str] = []
    release = asyncio.Event()

    async def crawl(client: str) -> None:
        async with limiter.slot(client):
            order.append(client)
            await release.wait()
            await asyncio.sleep(0)

    hog = [asyncio.ensure_future(crawl("hog")) for _ in range(20)]
    await asyncio.sleep(0)
    late = [asyncio.ensure_future(crawl("late")) for _ in range(3)]
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(*hog, *late)
    # the two hog crawls that started first, then the late client alternates with the hog
    positions = [i for i, c in enumerate(order) if c == "late"]
    assert positions[-1] <= 2 + 2 * 3, order


@pytest.mark.anyio
async def test_per_client_caps_and_busy() -> None:
    limiter = FairLimiter(4, 100, per_client=1, per_client_queued=1)
    await limiter.acquire("a")
    assert limiter.running_for("a") == 1
    waiter = asyncio.ensure_future(limiter.acquire("a"))  # queued: a is at its cap though slots are free
    await asyncio.sleep(0)
    assert not waiter.done() and limiter.waiting_for("a") == 1
    with pytest.raises(BusyError, match="max_queued_calls_per_client"):
        await limiter.acquire("a")
    await limiter.acquire("b")  # others are not affected
    limiter.release("a")
    await waiter
    assert limiter.running_for("a") == 1
    limiter.release("a")
    limiter.release("b")
    assert limiter.running == 0


@pytest.mark.anyio
async def test_a_cancelled_waiter_leaves_the_queue_and_no_slot_leaks() -> None:
    limiter = FairLimiter(1, 10)
    await limiter.acquire("a")
    waiter = asyncio.ensure_future(limiter.acquire("b"))
    await asyncio.sleep(0)
    waiter.cancel()
    limiter.release("a")
    await asyncio.gather(waiter, return_exceptions=True)
    assert limiter.running == 0 and limiter.waiting == 0
    async with limiter:
        assert limiter.running == 1


@pytest.mark.anyio
async def test_global_queue_limit_says_busy() -> None:
    limiter = FairLimiter(1, 1)
    await limiter.acquire("a")
    waiter = asyncio.ensure_future(limiter.acquire("b"))
    await asyncio.sleep(0)
    with pytest.raises(BusyError, match="retry"):
        await limiter.acquire("c")
    limiter.release("a")
    await waiter
    limiter.release("b")


@pytest.mark.anyio
async def test_unless_gone_cancels_the_work_when_the_client_hangs_up() -> None:
    info = CallInfo()
    cancelled = asyncio.Event()

    async def work() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "done"

    task = asyncio.ensure_future(unless_gone(info, work()))
    await asyncio.sleep(0.01)
    info.gone.set()
    with pytest.raises(ClientGone):
        await task
    assert cancelled.is_set()

    async def quick() -> str:
        return "done"

    assert await unless_gone(CallInfo(), quick()) == "done"


# -- Host, Origin, size, health, log ---------------------------------------------------------------


def test_allowed_hosts_are_the_bind_address_plus_the_configured_ones() -> None:
    local = allowed_hosts(ServerSettings(), "127.0.0.1")
    assert {"127.0.0.1:*", "localhost:*", "[::1]:*"} <= set(local)
    wide = allowed_hosts(ServerSettings(allowed_hosts=["crawl.example.com", "10.0.0.5:8443"]), "0.0.0.0")
    assert "localhost:*" not in wide
    assert {"0.0.0.0:*", "crawl.example.com", "crawl.example.com:*", "10.0.0.5:8443"} <= set(wide)
    assert "10.0.0.5:*" not in wide


def test_allowed_origins_are_the_servers_own_plus_the_configured_ones() -> None:
    local = allowed_origins(ServerSettings(), "127.0.0.1", 8765)
    assert set(local) == {"http://127.0.0.1:8765", "http://localhost:8765", "http://[::1]:8765"}
    wide = allowed_origins(ServerSettings(allowed_hosts=["crawl.example.com", "10.0.0.5:8443"],
                                          allowed_origins=["https://app.example"]), "0.0.0.0", 8765)
    assert set(wide) == {"http://0.0.0.0:8765", "http://crawl.example.com:8765", "https://app.example"}


async def call_gate(gate: Gate, method: str = "POST", path: str = "/mcp", headers: dict[str, str] | None = None,
                    body: bytes = b"") -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "query_string": b"token=hidden",
             "headers": [(k.encode(), v.encode()) for k, v in (headers or {}).items()]}
    await gate(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    message = await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": message.get("body", b"")})


@pytest.mark.anyio
async def test_the_gate(caplog: pytest.LogCaptureFixture) -> None:
    gate = Gate(echo_app, ServerSettings(max_body_kb=1, allowed_origins=["https://app.example"]), "0.0.0.0")
    ok_host = {"host": "0.0.0.0:8765"}
    assert await call_gate(gate, "GET", "/healthz", {"host": "anything"}) == (200, b"ok\n")
    assert (await call_gate(gate, headers={"host": "evil.example"}))[0] == 421
    assert (await call_gate(gate, headers={}))[0] == 421  # no Host at all
    assert (await call_gate(gate, headers={**ok_host, "origin": "https://evil.example"}))[0] == 403
    assert (await call_gate(gate, headers={**ok_host, "origin": "https://app.example"}))[0] == 200
    assert (await call_gate(gate, headers={**ok_host, "content-length": str(2048)}, body=b"x" * 2048))[0] == 413
    with caplog.at_level(logging.INFO, logger="crawlkeeper.http.access"):
        status, body = await call_gate(gate, headers=ok_host, body=b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}')
    assert status == 200 and b"tools/list" in body
    assert "POST /mcp client=- call=tools/list status=200 outcome=ok" in caplog.text
    assert "hidden" not in caplog.text
    gate.draining = True
    assert (await call_gate(gate, headers=ok_host))[0] == 503
    assert (await call_gate(gate, "GET", "/healthz"))[0] == 503


# -- client configs --------------------------------------------------------------------------------


def test_example_client_configs_for_http_are_valid_and_hold_no_token() -> None:
    folder = Path(__file__).resolve().parents[2] / "examples" / "clients"
    http_configs = 0
    for path in folder.glob("*.json"):
        servers = json.loads(path.read_text(encoding="utf-8"))["mcpServers"]
        for entry in servers.values():
            if "url" in entry:
                http_configs += 1
                assert entry["url"].endswith("/mcp")
                auth = entry["headers"]["Authorization"]
                assert auth.startswith("Bearer ") and ("${" in auth or "REPLACE" in auth), path
    assert http_configs >= 2
