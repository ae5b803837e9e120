"""The HTTP transport under load and bad input (small sizes here; full sizes in benchmarks/http_bench.py):
concurrent clients with their own tokens stay isolated and fairly served, and garbage, dropped connections,
huge bodies and a slowloris client neither stop the others nor leak descriptors or memory."""

from __future__ import annotations

import contextlib
import socket
import statistics
import time
from collections.abc import Iterator

import anyio
import httpx2
import psutil
import pytest

from crawlkeeper.testing.site import TestSite

from http_helpers import HttpServer, add_token, bearer, http_client, ok

pytestmark = pytest.mark.integration

CLIENTS = 4
CRAWLS = 3
MCP_HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    srv = HttpServer(tmp_path_factory.mktemp("load"), "header_timeout_s = 2\n")
    srv.tokens = [add_token(srv.config, f"client{i}") for i in range(CLIENTS)]  # type: ignore[attr-defined]
    with srv:
        yield srv


async def crawl_as(server: HttpServer, index: int, site: TestSite, latencies: list[float], seen: list[str]) -> None:
    token = server.tokens[index]  # type: ignore[attr-defined]
    async with http_client(server.url, token) as client:
        cookie = {"name": f"mine{index}", "value": f"value-{index}", "url": site.url("/")}
        await ok(client, "create_session", {"session_id": "s", "cookies": [cookie]})
        for _ in range(CRAWLS):
            started = time.monotonic()
            result = await ok(client, "crawl_url", {"url": site.url("/cookies"), "session_id": "s", "output": "text"})
            latencies.append(time.monotonic() - started)
            seen.append(result["content"])
        listed = (await ok(client, "list_sessions"))["sessions"]
        assert [(s["session_id"], [c["name"] for c in s["cookies"]]) for s in listed] == [("s", [f"mine{index}"])]
        await ok(client, "close_session", {"session_id": "s"})


@pytest.mark.anyio
async def test_concurrent_clients_stay_isolated_and_are_served_alike(server: HttpServer, test_site: TestSite) -> None:
    await crawl_as(server, 0, test_site, [], [])  # warm: the first crawls start the browser
    latencies: dict[int, list[float]] = {i: [] for i in range(CLIENTS)}
    pages: dict[int, list[str]] = {i: [] for i in range(CLIENTS)}
    with anyio.fail_after(240):
        async with anyio.create_task_group() as tg:
            for i in range(CLIENTS):
                tg.start_soon(crawl_as, server, i, test_site, latencies[i], pages[i])
    assert sum(len(v) for v in latencies.values()) == CLIENTS * CRAWLS  # 0 errors: ok() asserts every call
    for i, texts in pages.items():
        for text in texts:
            assert f"mine{i}" in text
            others = [f"mine{j}" for j in range(CLIENTS) if j != i and f"mine{j}" in text]
            assert not others, f"client {i} saw cookies of {others}"
    # Served alike: no client waits much longer than another (slots go round-robin). Absolute latency on a
    # shared 2-core machine says little; benchmarks/http_bench.py reports p95 against the single-client median.
    medians = {i: statistics.median(v) for i, v in latencies.items()}
    assert max(medians.values()) <= 3 * min(medians.values()) + 1.0, medians


def open_fds(proc: psutil.Process) -> int:
    return proc.num_fds()


def raw(server: HttpServer, data: bytes, *, read: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(data)
        if not read:
            return b""
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)


@pytest.mark.anyio
async def test_bad_input_does_not_stop_others_or_leak(server: HttpServer, test_site: TestSite) -> None:
    proc = server.process()
    token = server.tokens[1]  # type: ignore[attr-defined]
    auth = bearer(token)
    async with http_client(server.url, token) as client:
        await ok(client, "crawl_url", {"url": test_site.url("/tiny")})
    await anyio.sleep(0.5)
    fds_before, rss_before = open_fds(proc), proc.memory_info().rss

    host = f"127.0.0.1:{server.port}".encode()
    request_head = (b"POST /mcp HTTP/1.1\r\nHost: " + host + b"\r\nAuthorization: Bearer " + token.encode()
                    + b"\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n")

    slow = socket.create_connection(("127.0.0.1", server.port))
    slow.sendall(b"POST /mcp HTTP/1.1\r\nHost: " + host + b"\r\n")  # then trickles, never finishing its headers

    async with http_client(server.url, token) as client:
        for round_ in range(3):
            # malformed JSON: a clear 400 each, nothing kept
            for _ in range(20):
                response = httpx2.post(server.url, content=b'{"jsonrpc": "2.0", "id": 1, "method": ',
                                       headers={**MCP_HEADERS, **auth})
                assert response.status_code == 400
            # connections dropped mid-request (headers promise a body that never comes), and mid-headers
            for _ in range(40):
                raw(server, request_head + b"Content-Length: 500\r\n\r\n{\"jsonrpc\"", read=False)
                raw(server, b"POST /mcp HTTP/1.1\r\nHost: " + host, read=False)
            # 10 MB bodies: refused with 413 before they are read
            big = httpx2.post(server.url, content=b"x" * (10 * 1024 * 1024), headers={**MCP_HEADERS, **auth})
            assert big.status_code == 413
            with contextlib_suppress():
                slow.sendall(b"X-Slow: " + str(round_).encode() + b"\r\n")
            # the others keep being served meanwhile
            result = await ok(client, "crawl_url", {"url": test_site.url("/tiny")})
            assert result["status"] == 200

    # the slowloris connection was cut by the header deadline
    slow.settimeout(5)
    with contextlib_suppress():
        assert slow.recv(1024) == b""
    slow.close()

    for _ in range(60):  # closed sockets take a moment to be reaped
        if open_fds(proc) <= fds_before + 3:
            break
        await anyio.sleep(0.25)
    assert open_fds(proc) <= fds_before + 3, f"fds {fds_before} -> {open_fds(proc)}"
    rss_after = proc.memory_info().rss
    assert rss_after - rss_before < 60 * 1024 * 1024, f"RSS grew {(rss_after - rss_before) / 2**20:.0f} MB"
    assert "closing a connection that sent no complete request" in server.log()


def contextlib_suppress() -> contextlib.suppress:
    return contextlib.suppress(OSError)
