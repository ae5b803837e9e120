"""Unit tests for tests/sites.py: the test-only routes ``ReposTestSite`` adds to the shipped login site, the
``HitCounter`` sentinel, and ``HostileSite``/``ExtraSite`` (the shipped site itself is tested in test_site.py)."""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from test_site import _fetch

from sites import ExtraSite, HitCounter, HostileSite, ReposTestSite, html_page


@pytest.fixture
def site() -> Iterator[Any]:
    with ReposTestSite() as running:
        yield running


def test_test_only_pages_have_title_h1_and_text(site: Any) -> None:
    for path in ("/", "/login", "/cookies", "/links", "/js", "/loop", "/status/500", "/nope"):
        _, _, page, _ = _fetch(site.url(path))
        assert "<title>" in page and "<h1>" in page, path
        visible = re.sub(r"<script.*?</script>|<[^>]+>", "", page, flags=re.S)
        assert len(" ".join(visible.split())) >= 200, path


def test_redirect_chain(site: Any) -> None:
    status, _, _, final = _fetch(site.url("/redirect-chain?n=3"), follow=True)
    assert status == 200 and final == site.url("/")
    assert site.hits["/redirect-chain"] == 3


def test_status_pages(site: Any) -> None:
    status, _, body, _ = _fetch(site.url("/status/404"))
    assert status == 404 and "<title>Status 404</title>" in body
    assert _fetch(site.url("/status/500"))[0] == 500
    assert _fetch(site.url("/status/204"))[0] == 204
    assert _fetch(site.url("/status/500"), data={"a": "b"})[0] == 405


def test_long_page_has_n_paragraphs(site: Any) -> None:
    status, _, body, _ = _fetch(site.url("/long?n=2000"))
    assert status == 200 and "<title>Long page</title>" in body
    paragraphs = re.findall(r"<p>Paragraph (\d+): [^<]*</p>", body)
    assert [int(p) for p in paragraphs] == list(range(1, 2001))
    assert _fetch(site.url("/long?n=2000"))[2] == body  # deterministic


def test_subresources_and_service_worker(site: Any) -> None:
    target = "http://127.0.0.3:9/probe"
    status, _, body, _ = _fetch(site.url("/subresources?target=" + urllib.parse.quote(target, safe="")))
    assert status == 200
    assert (
        f'<img id="probe-img" src="{target}"' in body and f'<iframe id="probe-frame" src="{target}"' in body
    )
    assert "fetch(target" in body and '"ws://127.0.0.3:9/probe"' in body and "serviceWorker" in body
    status, headers, body, _ = _fetch(site.url("/sw.js?target=" + urllib.parse.quote(target, safe="")))
    assert status == 200 and headers["Content-Type"].startswith("application/javascript")
    assert json.dumps(target) in body and "install" in body
    assert _fetch(site.url("/subresources?target=file:///etc/passwd"))[0] == 400


def test_websocket_handshake(site: Any) -> None:
    key = "dGhlIHNhbXBsZSBub25jZQ=="  # the example from RFC 6455, section 1.3
    with socket.create_connection(("127.0.0.1", site.port), timeout=3) as sock:
        sock.sendall(
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(4096)
    assert data.startswith(b"HTTP/1.1 101")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in data
    assert site.hits["/ws"] == 1
    assert _fetch(site.url("/ws"))[0] == 426


def test_big_tiny_and_head(site: Any) -> None:
    status, headers, body, _ = _fetch(site.url("/big?mb=0.5"))
    assert status == 200 and "<title>Big page</title>" in body
    assert int(headers["Content-Length"]) == len(body.encode())
    assert abs(len(body) - 512 * 1024) < 200
    assert _fetch(site.url("/tiny"))[2] == "<html><body>ok</body></html>"
    conn = http.client.HTTPConnection("127.0.0.1", site.port, timeout=3)
    try:
        conn.request("HEAD", "/big?mb=5")
        response = conn.getresponse()
        assert response.status == 200 and response.read() == b""
        assert int(response.headers["Content-Length"]) > 5 * 1024 * 1024 - 200
        conn.request("GET", "/tiny")  # keep-alive: same connection is reused
        assert conn.getresponse().read() == b"<html><body>ok</body></html>"
    finally:
        conn.close()


def test_slow_does_not_block_other_requests(site: Any) -> None:
    result: dict[str, Any] = {}

    def slow() -> None:
        result["status"] = _fetch(site.url("/slow?s=0.2"))[0]

    thread = threading.Thread(target=slow)
    thread.start()
    deadline = time.monotonic() + 2
    while site.hits["/slow"] == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    started = time.monotonic()
    assert _fetch(site.url("/tiny"))[0] == 200
    assert time.monotonic() - started < 0.15
    assert thread.is_alive()  # the slow request is still in flight
    thread.join(timeout=3)
    assert result["status"] == 200


def test_stop_is_prompt_with_slow_request_in_flight() -> None:
    site = ReposTestSite().start()
    idle = http.client.HTTPConnection("127.0.0.1", site.port, timeout=5)  # an idle keep-alive connection
    idle.request("GET", "/tiny")
    idle.getresponse().read()
    errors: list[BaseException] = []

    def slow() -> None:
        try:
            _fetch(site.url("/slow?s=30"))
        except Exception as exc:  # the connection is dropped when the server stops
            errors.append(exc)

    thread = threading.Thread(target=slow)
    thread.start()
    deadline = time.monotonic() + 2
    while site.hits["/slow"] == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    started = time.monotonic()
    site.stop()
    assert time.monotonic() - started < 2
    thread.join(timeout=2)
    assert not thread.is_alive() and errors
    idle.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", site.port), timeout=1).close()
    site.stop()  # idempotent


def test_hit_counter_counts_connections() -> None:
    with HitCounter() as sentinel:
        assert sentinel.base_url.startswith("http://127.0.0.3:")
        assert sentinel.hits == 0
        socket.create_connection((sentinel.host, sentinel.port), timeout=2).close()  # raw connection
        assert sentinel.wait_for_hits(1)
        status, _, body, _ = _fetch(sentinel.url("/anything"))
        assert status == 200 and body == "ok"
        assert sentinel.hits == 2
        assert "GET /anything HTTP/1.1" in sentinel.request_lines


def test_hit_counter_only_on_loopback() -> None:
    with pytest.raises(ValueError):
        HitCounter(host="example.com")


def test_test_only_routes_never_print(capfd: pytest.CaptureFixture[str]) -> None:
    with ReposTestSite() as running:
        for path in ("/status/500", "/slow?s=x", "/long?n=x", "/subresources?target=x"):
            _fetch(running.url(path))
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_hostile_site_counts_requests_and_keeps_its_own_pages() -> None:
    with HostileSite() as hostile:
        status, headers, body, _ = _fetch(hostile.url("/"))
        assert status == 200 and "hostile index" in body and headers["Cache-Control"] == "no-store"
        status, _, body, _ = _fetch(hostile.url("/nope?x=1"))
        assert status == 404 and "<title>missing</title>" in body
        _, headers, _, _ = _fetch(hostile.url("/cacheable"))
        assert headers.get_all("Cache-Control") == ["max-age=600"]  # the route's own caching, not no-store too
        _, _, body, _ = _fetch(hostile.url("/popups?n=2"))
        assert body.count("window.open('/interval?popup='") == 1 and "i < 2;" in body  # the query is read
        assert (hostile.count("/"), hostile.count("/nope"), hostile.count("/cacheable")) == (1, 1, 1)
        assert hostile.errors == []


def test_hostile_site_on_another_loopback_address_and_its_stream_ends_at_exit() -> None:
    with HostileSite("127.0.0.3") as hostile:
        assert hostile.base_url.startswith("http://127.0.0.3:")
        with socket.create_connection(("127.0.0.3", hostile.port), timeout=5) as sock:
            sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b"Transfer-Encoding: chunked" in sock.recv(65536)
            while hostile.streamed < 1_000_000:
                sock.recv(1 << 20)
    assert hostile.stopping.is_set()  # the endless response stopped with the site


def test_extra_site_routes_records_and_answers() -> None:
    with ExtraSite() as extra:
        extra.page("/a", html_page("A", "<p>a</p>"))
        extra.page("/robots.txt", "User-agent: *\n", headers={"content-type": "text/plain"})
        extra.page("/away", b"", status=302, headers={"location": "/a"})
        extra.route("/tree/*", lambda request: (200, {"X-Path": request.path}, request.query["q"][0].encode()))
        extra.route("/broken", lambda request: 1 / 0)  # type: ignore[arg-type,return-value]
        status, headers, body, _ = _fetch(extra.url("/a"))
        assert (status, headers["Content-Type"], "<title>A</title>" in body) == (200, "text/html; charset=utf-8", True)
        assert _fetch(extra.url("/robots.txt"))[1]["Content-Type"] == "text/plain"
        status, headers, _, _ = _fetch(extra.url("/away"))
        assert (status, headers["Location"]) == (302, "/a")
        status, headers, body, _ = _fetch(extra.url("/tree/x/y?q=hello"), headers={"User-Agent": "probe"})
        assert (status, headers["X-Path"], body) == (200, "/tree/x/y", "hello")
        status, _, body, _ = _fetch(extra.url("/nothing"))
        assert status == 404 and "<title>Not found</title>" in body
        status, _, body, _ = _fetch(extra.url("/broken"))
        assert status == 500 and "ZeroDivisionError" in body
        assert _fetch(extra.url("/a"), data={"k": "v"})[0] == 200  # POST: the body is read, the route answers
        assert ("GET", "/tree/x/y?q=hello", "probe") in extra.requests  # method, path with query, user agent
        assert (extra.hits("/a"), extra.hits("/tree/x/y"), extra.hits("/nothing")) == (2, 1, 1)
