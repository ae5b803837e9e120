"""robots.txt fetching over real HTTP on loopback: size and time bounds, status handling (no browser)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread
from typing import Any

import anyio
import pytest

from crawlkeeper import robots
from crawlkeeper.robots import RobotsCache, proxied_fetcher


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        if self.path.startswith("/big/"):
            self.send_response(200)
            self.send_header("content-type", "text/plain")
            self.end_headers()
            line = b"User-agent: *\nDisallow: /first/\n" + b"# padding padding padding padding\n" * 330_000
            try:
                self.wfile.write(line)  # ~11 MB
            except OSError:
                pass
        elif self.path.startswith("/slow/"):
            self.send_response(200)
            self.send_header("content-type", "text/plain")
            self.end_headers()
            try:
                for _ in range(100):
                    self.wfile.write(b"# slow\n")
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass
        elif self.path.startswith("/gone/"):
            self.send_error(404)
        else:
            self.send_error(503)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.mark.anyio
async def test_a_10_mb_robots_txt_is_read_up_to_the_cap(server: str) -> None:
    file = await proxied_fetcher(None)(f"{server}/big/robots.txt")
    assert file.status == 200 and len(file.body) == robots.MAX_BYTES
    rules = robots.rules_from(file)
    assert not rules.allowed(f"{server}/first/x") and rules.allowed(f"{server}/other")


@pytest.mark.anyio
async def test_a_slow_robots_txt_is_unreachable_after_the_time_bound(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(robots, "FETCH_TIMEOUT_S", 1.0)
    started = time.monotonic()
    file = await proxied_fetcher(None)(f"{server}/slow/robots.txt")  # 10 s of dripping at full length
    assert time.monotonic() - started < 3
    assert file.status is None  # unreachable ...
    assert not robots.rules_from(file).allowed(f"{server}/slow/page")  # ... so: disallow all


@pytest.mark.anyio
async def test_statuses(server: str) -> None:
    fetch = proxied_fetcher(None)
    assert (await fetch(f"{server}/gone/robots.txt")).status == 404
    assert (await fetch(f"{server}/error/robots.txt")).status == 503
    assert (await fetch("http://127.0.0.1:9/robots.txt")).status is None  # connection refused
    with anyio.fail_after(5):
        assert await RobotsCache(fetch).rules(f"{server}/x") is not None


@pytest.mark.anyio
async def test_robots_txt_goes_through_the_egress_proxy_with_its_credentials(server: str) -> None:
    # The egress proxy answers 407 to anything without its credentials; a 407 read as "4xx: no robots.txt"
    # would silently allow everything. The URL the app hands out carries them, and urllib sends them.
    from crawlkeeper.egress import EgressPolicy, EgressProxy

    async with EgressProxy(EgressPolicy.from_lists(allow_private=["127.0.0.1"])) as proxy:
        file = await proxied_fetcher(proxy.url_with_credentials)(f"{server}/big/robots.txt")
        assert file.status == 200 and not robots.rules_from(file).allowed(f"{server}/first/x")
        assert (await proxied_fetcher(proxy.url)(f"{server}/big/robots.txt")).status == 407
        assert proxy.stats["allowed"] == 1 and proxy.stats["unauthorized"] == 1
