"""Headers behave the same in the fake and in Chromium: Playwright's ``set_extra_http_headers`` replaces,
``session.headers`` merges (and so does the old call on a crawlkeeper context), scoped headers reach their own
site and never a third party's image, script or fetch, and redirect hops carry what the first request carried.

The third party is a second loopback host (127.0.0.2) that records what it receives; the fake records the same
in ``FakeBrowser.requests``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest

from crawlkeeper import CrawlError, SessionHeaders

from backends import Backend, Route, page_html

pytestmark = pytest.mark.anyio

THIRD_HOST = "127.0.0.2"


class ThirdParty:
    """Another site on 127.0.0.2: answers 200 to anything and records (path, headers with lower-cased names)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str]]] = []
        self.redirect_back_to = ""  # where /back sends the browser (302)
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site.received.append((urlsplit(self.path).path, {k.lower(): v for k, v in self.headers.items()}))
                if urlsplit(self.path).path == "/back" and site.redirect_back_to:
                    self.send_response(302)
                    self.send_header("Location", site.redirect_back_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = b"<html><body>third party</body></html>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer((THIRD_HOST, 0), Handler)
        server.daemon_threads = True
        self._server = server
        self.base = f"http://{THIRD_HOST}:{server.server_address[1]}"
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def third() -> Iterator[ThirdParty]:
    site = ThirdParty()
    try:
        yield site
    finally:
        site.close()


def third_requests(backend: Backend, third: ThirdParty) -> list[tuple[str, dict[str, str]]]:
    if backend.kind == "fake":
        return [(urlsplit(r.url).path, dict(r.headers)) for r in backend.browser.requests_to(THIRD_HOST)]
    return list(third.received)


def embedding_page(third: ThirdParty) -> Route:
    """A page of the profile's site that pulls an image, a script and a fetch from the third party."""
    return Route(page_html("Embeds", (
        f'<p>Some content.</p><img src="{third.base}/pixel.png"><script src="{third.base}/lib.js"></script>'
        f'<script>fetch("{third.base}/api", {{mode: "no-cors"}}).catch(() => {{}});</script>'
    )))


async def settle(backend: Backend, third: ThirdParty, paths: set[str]) -> None:
    """Wait (Chromium) until the third party saw ``paths``: the fetch may land after the load event."""
    deadline = time.monotonic() + 3
    while {p for p, _ in third_requests(backend, third)} < paths and time.monotonic() < deadline:
        await _sleep(0.05)


async def _sleep(seconds: float) -> None:
    import anyio

    await anyio.sleep(seconds)


@pytest.fixture(autouse=True)
def _fresh_third(third: ThirdParty) -> None:
    third.received.clear()


async def test_set_extra_http_headers_replaces_the_contexts_headers(backend: Backend) -> None:
    """Playwright's own call, on a context nobody wrapped: the first header is gone (this clobbered plugins)."""
    context = await backend.new_context(extra_headers={"X-A": "1"})
    await context.set_extra_http_headers({"X-B": "2"})
    page = await backend.new_page(context)
    await page.goto(backend.url("/page"))
    [sent] = backend.requests("/page")
    assert sent.get("x-b") == "2"
    assert "x-a" not in sent


async def test_session_headers_merge_and_the_old_call_merges_too(backend: Backend, third: ThirdParty) -> None:
    context = await backend.new_context()
    headers = SessionHeaders(context, owner="contract")
    await headers.add({"Accept-Language": "fr"})
    await context.set_extra_http_headers({"X-Old-Plugin": "1"})  # wrapped: merges instead of replacing
    await headers.add({"X-Other": "2"})
    assert headers.effective() == {"Accept-Language": "fr", "X-Old-Plugin": "1", "X-Other": "2"}
    backend.route("/embeds", embedding_page(third))
    page = await backend.new_page(context)
    await page.goto(backend.url("/embeds"))
    await settle(backend, third, {"/pixel.png", "/lib.js"})
    [sent] = backend.requests("/embeds")
    assert (sent.get("accept-language"), sent.get("x-old-plugin"), sent.get("x-other")) == ("fr", "1", "2")
    # Without sites of its own, a plain header goes everywhere (as before): third parties get it too.
    received = third_requests(backend, third)
    assert {p for p, _ in received} >= {"/pixel.png", "/lib.js"}
    assert all(h.get("accept-language") == "fr" for _, h in received)


async def test_scoped_headers_reach_their_site_and_never_a_third_party(backend: Backend, third: ThirdParty) -> None:
    context = await backend.new_context()
    headers = SessionHeaders(context, sites=[backend.host], owner="contract")
    await headers.add({"Authorization": "Bearer contract-token-1", "X-Api-Key": "contract-key-2"})
    await headers.add({"X-Plain": "p"})  # the session has sites: even a plain header stays on them
    backend.route("/embeds", embedding_page(third))
    page = await backend.new_page(context)
    await page.goto(backend.url("/embeds"))
    wanted = {"/pixel.png", "/lib.js"} | ({"/api"} if backend.kind == "chromium" else set())
    await settle(backend, third, wanted)
    [sent] = backend.requests("/embeds")
    assert sent.get("authorization") == "Bearer contract-token-1"
    assert sent.get("x-api-key") == "contract-key-2" and sent.get("x-plain") == "p"
    received = third_requests(backend, third)
    assert {p for p, _ in received} >= wanted, received
    for path, got in received:
        assert not {"authorization", "x-api-key", "x-plain"} & got.keys(), (path, got)


async def test_a_header_scoped_elsewhere_skips_this_site(backend: Backend, third: ThirdParty) -> None:
    context = await backend.new_context()
    headers = SessionHeaders(context, owner="contract")
    await headers.add({"X-Token": "for-the-third-party"}, domains=[THIRD_HOST])
    backend.route("/embeds", embedding_page(third))
    page = await backend.new_page(context)
    await page.goto(backend.url("/embeds"))
    await settle(backend, third, {"/pixel.png", "/lib.js"})
    assert "x-token" not in backend.requests("/embeds")[0]
    received = dict(third_requests(backend, third))
    assert received["/pixel.png"].get("x-token") == "for-the-third-party"
    with pytest.raises(CrawlError, match="X-Secret"):
        await headers.add({"X-Secret": "no-sites-here"})  # a credential needs sites


async def test_each_redirect_hop_gets_only_what_its_own_host_may_get(backend: Backend, third: ThirdParty) -> None:
    """An open redirect on the profile's own site must not forward its scoped header to another host, and a
    hop back into scope gets it again (Playwright's route re-applied the first request's headers to every hop:
    the key reached the third party, and a redirect into scope went without it)."""
    context = await backend.new_context()
    headers = SessionHeaders(context, sites=[backend.host], owner="contract")
    await headers.add({"X-Api-Key": "contract-key-3"})
    third.redirect_back_to = backend.url("/home")
    backend.route("/bounce", Route(redirect=f"{third.base}/landing"))
    backend.route("/out-and-back", Route(redirect=f"{third.base}/back"))
    backend.route("/home", Route(page_html("Home", "<p>Home.</p>")))
    if backend.kind == "fake":
        backend.browser.add_page(f"{third.base}/back", redirect=backend.url("/home"))
    page = await backend.new_page(context)
    await page.goto(backend.url("/bounce"))
    assert page.url == f"{third.base}/landing"
    assert backend.requests("/bounce")[-1].get("x-api-key") == "contract-key-3"
    landing = [h for p, h in third_requests(backend, third) if p == "/landing"]
    assert landing and "x-api-key" not in landing[0]
    await page.goto(backend.url("/out-and-back"))  # in scope -> third party -> back in scope
    assert page.url == backend.url("/home")
    back = [h for p, h in third_requests(backend, third) if p == "/back"]
    assert back and "x-api-key" not in back[0]
    assert backend.requests("/home")[-1].get("x-api-key") == "contract-key-3"
    await page.goto(f"{third.base}/back")  # starting outside, redirected into scope
    assert backend.requests("/home")[-1].get("x-api-key") == "contract-key-3"
    assert len(backend.requests("/home")) == 2
