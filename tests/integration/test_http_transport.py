"""The Streamable HTTP transport end to end: a real `crawlkeeper serve --transport http`, real Chromium,
tokens made with the real CLI, and the official MCP Python SDK's Streamable HTTP client."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx2
import pytest

from crawlkeeper.testing.site import TestSite

from helpers import text_of
from http_helpers import HttpServer, add_token, bearer, error, http_client, ok, token_cli

pytestmark = pytest.mark.integration

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}}
MCP_HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    srv = HttpServer(tmp_path_factory.mktemp("http"))
    srv.tokens = {  # type: ignore[attr-defined]
        "alice": add_token(srv.config, "alice"),
        "bob": add_token(srv.config, "bob"),
        "root": add_token(srv.config, "root", admin=True),
    }
    with srv:
        yield srv


def tokens(server: HttpServer) -> dict[str, str]:
    return server.tokens  # type: ignore[attr-defined,no-any-return]


def test_health_needs_no_token_and_says_nothing(server: HttpServer) -> None:
    response = httpx2.get(f"{server.base}/healthz")
    assert response.status_code == 200
    assert response.text.strip() == "ok"


@pytest.mark.parametrize("token", [None, "ck_wrong", "not-even-ours"])
def test_missing_or_wrong_token_is_401_with_bearer_challenge(server: HttpServer, token: str | None) -> None:
    response = httpx2.post(server.url, json=INIT, headers={**MCP_HEADERS, **bearer(token)})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    if token:
        assert token not in server.log()


def test_a_valid_token_initializes(server: HttpServer) -> None:
    response = httpx2.post(server.url, json=INIT, headers={**MCP_HEADERS, **bearer(tokens(server)["alice"])})
    assert response.status_code == 200
    assert "crawlkeeper" in response.text


def test_bad_host_and_origin_are_refused_before_auth(server: HttpServer) -> None:
    alice = bearer(tokens(server)["alice"])
    bad_host = httpx2.post(server.url, json=INIT, headers={**MCP_HEADERS, **alice, "host": "evil.example"})
    assert bad_host.status_code == 421
    bad_origin = httpx2.post(server.url, json=INIT,
                             headers={**MCP_HEADERS, **alice, "origin": "http://evil.example"})
    assert bad_origin.status_code == 403
    # localhost and the bind address, any port, are this server's own names
    fine = httpx2.post(server.url, json=INIT, headers={**MCP_HEADERS, **alice, "host": f"localhost:{server.port}"})
    assert fine.status_code == 200


def test_oversized_bodies_get_413_and_the_server_keeps_serving(server: HttpServer) -> None:
    alice = bearer(tokens(server)["alice"])
    big = b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"' + b"x" * (3 * 1024 * 1024) + b'"}}'
    response = httpx2.post(server.url, content=big, headers={**MCP_HEADERS, **alice})
    assert response.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the SDK's streaming cap answers
        for _ in range(40):
            yield b"x" * 65536

    response = httpx2.post(server.url, content=chunks(), headers={**MCP_HEADERS, **alice})
    assert response.status_code == 413
    assert httpx2.post(server.url, json=INIT, headers={**MCP_HEADERS, **alice}).status_code == 200


@pytest.mark.anyio
async def test_the_official_client_crawls_with_a_token(server: HttpServer, test_site: TestSite) -> None:
    async with http_client(server.url, tokens(server)["alice"]) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        assert {"crawl_url", "crawl_many", "create_session", "list_sessions", "close_session"} <= tools
        result = await ok(client, "crawl_url", {"url": test_site.url("/") + "?q=query-secret-123"})
        assert result["status"] == 200
    log = server.log()
    assert "client=alice call=crawl_url" in log
    assert "query-secret-123" not in log
    assert tokens(server)["alice"] not in log


@pytest.mark.anyio
async def test_the_official_client_without_a_token_gets_nothing(server: HttpServer) -> None:
    refused = server.log().count("status=401")
    with pytest.raises(Exception):  # noqa: B017 - the SDK reports the 401 as a generic error group
        async with http_client(server.url, None):
            pass
    assert server.log().count("status=401") > refused


@pytest.mark.anyio
async def test_sessions_belong_to_the_client_that_made_them(server: HttpServer, test_site: TestSite) -> None:
    cookie = {"name": test_site.SESSION_COOKIE, "value": test_site.session_token("alice"), "url": test_site.url("/")}
    async with (
        http_client(server.url, tokens(server)["alice"]) as alice,
        http_client(server.url, tokens(server)["bob"]) as bob,
        http_client(server.url, tokens(server)["root"]) as root,
    ):
        await ok(alice, "create_session", {"session_id": "work", "cookies": [cookie]})
        private = await ok(alice, "crawl_url", {"url": test_site.url("/private"), "session_id": "work"})
        assert "Welcome, alice!" in private["content"]

        # bob: alice's session is exactly as unknown as one that never existed
        stolen = await error(bob, "crawl_url", {"url": test_site.url("/private"), "session_id": "work"})
        never = await error(bob, "crawl_url", {"url": test_site.url("/private"), "session_id": "never-was"})
        assert stolen.replace("'work'", "'X'") == never.replace("'never-was'", "'X'")
        assert (await ok(bob, "list_sessions"))["sessions"] == []
        assert "unknown session" in await error(bob, "close_session", {"session_id": "work"})
        assert "admin" in await error(bob, "list_sessions", {"all_clients": True})

        # bob may have his own "work": ids are per client, cookies stay apart
        await ok(bob, "create_session", {"session_id": "work"})
        bobs = await ok(bob, "crawl_url", {"url": test_site.url("/private"), "session_id": "work"})
        assert "secret-page-for-alice" not in dump_text(bobs)
        assert [s["session_id"] for s in (await ok(bob, "list_sessions"))["sessions"]] == ["work"]

        # the admin sees both, with owners, and may close alice's
        everyone = (await ok(root, "list_sessions", {"all_clients": True}))["sessions"]
        assert sorted((s["owner"], s["session_id"]) for s in everyone) == [
            ("token:alice", "work"), ("token:bob", "work")]
        assert (await ok(root, "list_sessions"))["sessions"] == []
        assert "several clients" in await error(root, "close_session", {"session_id": "work"})
        await ok(root, "close_session", {"session_id": "work", "owner": "token:alice"})
        assert "closed" in await error(alice, "crawl_url", {"url": test_site.url("/"), "session_id": "work"})
        await ok(bob, "crawl_url", {"url": test_site.url("/"), "session_id": "work"})
        await ok(bob, "close_session", {"session_id": "work"})


def dump_text(result: dict) -> str:
    return json.dumps(result)


@pytest.mark.anyio
async def test_revoking_a_token_takes_effect_within_a_second(server: HttpServer) -> None:
    carol = add_token(server.config, "carol")
    async with http_client(server.url, carol) as client:
        await client.list_tools()
    listed = token_cli(server.config, "list", "--json")
    rows = {r["name"]: r for r in json.loads(listed.stdout)["tokens"]}
    assert set(rows) >= {"alice", "bob", "root", "carol"}
    assert rows["root"]["admin"] is True
    assert carol not in listed.stdout and "sha256" not in listed.stdout
    tokens_file = server.config.parent / "tokens.json"
    assert stat.S_IMODE(os.stat(tokens_file).st_mode) == 0o600
    assert carol not in tokens_file.read_text()

    assert token_cli(server.config, "revoke", "carol").returncode == 0
    revoked_at = time.monotonic()
    response = httpx2.post(server.url, json=INIT, headers={**MCP_HEADERS, **bearer(carol)})
    assert response.status_code == 401
    assert time.monotonic() - revoked_at < 1.0
    assert token_cli(server.config, "revoke", "carol").returncode == 1


def open_session(server: HttpServer, token: str) -> dict[str, str]:
    """initialize + initialized over raw HTTP; the headers every later request of this MCP session sends."""
    headers = {**MCP_HEADERS, **bearer(token)}
    response = httpx2.post(server.url, json=INIT, headers=headers)
    assert response.status_code == 200, response.text
    headers = {**headers, "mcp-session-id": response.headers["mcp-session-id"], "mcp-protocol-version": "2025-06-18"}
    note = httpx2.post(server.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
    assert note.status_code == 202
    return headers


def test_a_client_that_hangs_up_cancels_its_crawl_many(server: HttpServer, test_site: TestSite) -> None:
    headers = open_session(server, tokens(server)["alice"])
    urls = [test_site.url(f"/slow?s=1&n={i}") for i in range(12)]
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "crawl_many", "arguments": {"urls": urls, "concurrency": 2}}}
    before = test_site.hits["/slow"]
    with httpx2.Client(timeout=30) as http, http.stream("POST", server.url, json=call, headers=headers) as response:
        assert response.status_code == 200
        deadline = time.monotonic() + 20
        while test_site.hits["/slow"] == before and time.monotonic() < deadline:
            time.sleep(0.05)
        # leaving both blocks closes the connection mid-answer, without a DELETE or a cancel notification
    time.sleep(1.5)
    started = test_site.hits["/slow"] - before
    time.sleep(2.5)
    assert test_site.hits["/slow"] - before == started, "crawls kept starting after the client hung up"
    assert 0 < started < len(urls)
    assert "call=crawl_many status=200 outcome=cancelled (client gone)" in server.log()


@pytest.mark.anyio
async def test_sigterm_lets_an_in_flight_call_finish_then_exits_0(tmp_path: Path, test_site: TestSite) -> None:
    srv = HttpServer(tmp_path)
    token = add_token(srv.config, "dave")
    with srv:
        assert srv.proc is not None
        async with http_client(srv.url, token) as client:
            await ok(client, "create_session", {"session_id": "keep"})
            answer: list[object] = []

            async def slow_call() -> None:
                answer.append(await client.call_tool("crawl_url", {"url": test_site.url("/slow?s=2")}))

            async with anyio.create_task_group() as tg:
                tg.start_soon(slow_call)
                await anyio.sleep(1.0)  # the crawl is in flight
                srv.proc.terminate()
                await anyio.sleep(0.5)
                with pytest.raises(httpx2.HTTPError):  # no longer accepting
                    httpx2.get(f"{srv.base}/healthz", timeout=1)
        result = answer[0]
        assert not result.is_error, text_of(result)  # type: ignore[attr-defined]
        assert "waited 2 seconds" in text_of(result)
        code = await anyio.to_thread.run_sync(srv.proc.wait, 20)
        assert code == 0, srv.log()
        assert "session keep closed (shutdown)" in srv.log()
