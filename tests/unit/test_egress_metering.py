"""The egress proxy counts decoded plain-HTTP bodies at network speed and cuts one that passes its context's limit.

Only loopback is contacted: the upstream listens on 127.0.0.2, reached through a fake resolver."""

from __future__ import annotations

import asyncio
import gzip
import time
import tracemalloc
import zlib
from collections.abc import Awaitable
from dataclasses import dataclass, field

import brotli
import pytest

from crawlkeeper.egress import EgressPolicy, EgressProxy
from crawlkeeper.egress.metering import DecodedCounter, accepted_codings

MB = 1_048_576
POLICY = EgressPolicy.from_lists(allow_private=["127.0.0.2"])


def run(coro: Awaitable[object], timeout: float = 10) -> object:
    return asyncio.run(asyncio.wait_for(coro, timeout))  # type: ignore[arg-type]


def chunked(body: bytes, size: int = 1000) -> bytes:
    out = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size]) for i in range(0, len(body), size))
    return out + b"0\r\nX-Trailer: y\r\n\r\n"


def count(raw: bytes, *, chunked_: bool = False, codings: tuple[str, ...] = (), piece: int = 7,
          limit: int = 10**12) -> tuple[int, bool]:
    counter = DecodedCounter(chunked=chunked_, codings=list(codings))
    ok = True
    for i in range(0, len(raw), piece):
        ok = counter.feed(raw[i:i + piece], limit)
        if not ok:
            break
    return counter.decoded, ok


BODY = b"<p>hello decoded world</p>\n" * 3000


@pytest.mark.parametrize("coding", ["gzip", "deflate-zlib", "deflate-raw", "br"])
@pytest.mark.parametrize("framing", ["plain", "chunked"])
def test_counts_the_decoded_size_whatever_the_framing_and_coding(coding: str, framing: str) -> None:
    if coding == "gzip":
        encoded = gzip.compress(BODY)
    elif coding == "deflate-zlib":
        encoded = zlib.compress(BODY)
    elif coding == "deflate-raw":
        c = zlib.compressobj(wbits=-15)
        encoded = c.compress(BODY) + c.flush()
    else:
        encoded = brotli.compress(BODY)
    raw = chunked(encoded) if framing == "chunked" else encoded
    name = coding.partition("-")[0]
    for piece in (1, 5, 4096, len(raw)):  # every split of the framing and of the compressed stream
        assert count(raw, chunked_=framing == "chunked", codings=(name,), piece=piece) == (len(BODY), True)
    assert count(chunked(BODY), chunked_=True) == (len(BODY), True)
    assert count(BODY) == (len(BODY), True)


def test_stacked_codings_are_undone_last_first() -> None:
    raw = brotli.compress(gzip.compress(BODY))  # Content-Encoding: gzip, br
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip, br\r\nTransfer-Encoding: chunked\r\n\r\n"
    counter = DecodedCounter.for_response(head)
    assert counter.feed(chunked(raw), 10**9) and counter.decoded == len(BODY)


def test_a_bomb_is_stopped_at_the_limit_in_bounded_memory_and_time() -> None:
    bomb = gzip.compress(b"\0" * (40 * MB), compresslevel=1)  # ~180 KB
    tracemalloc.start()
    started = time.perf_counter()
    decoded, ok = count(bomb, codings=("gzip",), piece=64 * 1024, limit=20 * MB)
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert not ok and 20 * MB < decoded < 21 * MB
    assert peak < 4 * MB, f"counting held {peak / MB:.1f} MB"
    assert elapsed < 2, elapsed


def test_undecodable_bodies_count_their_raw_bytes() -> None:
    assert count(b"not gzip at all" * 100, codings=("gzip",)) == (1500, True)
    assert count(b"zz\r\nbody", chunked_=True) == (8, True)  # bad chunk size: raw from there on
    assert count(b"abc" * 10, codings=("zstd",)) == (30, True)  # a coding the proxy never offered


@pytest.mark.parametrize(("offered", "sent"), [
    ("gzip, deflate, br, zstd", "gzip, deflate, br"),  # Chromium to HTTPS or localhost
    ("gzip, deflate", "gzip, deflate"),  # Chromium to a plain-HTTP site: never br it did not ask for
    ("identity", "identity"),  # a range request
    ("zstd", "identity"),
    ("br;q=1.0, gzip;q=0.8, *;q=0.1", "br;q=1.0, gzip;q=0.8"),
    ("GZIP , x-gzip", "GZIP, x-gzip"),
])
def test_only_codings_the_browser_offered_and_the_meter_counts_go_upstream(offered: str, sent: str) -> None:
    assert accepted_codings(offered) == sent


# -- through the proxy --------------------------------------------------------------------------------------


@dataclass
class Limit:
    max_bytes: int
    cut: list[tuple[str, int]] = field(default_factory=list)

    def exceeded(self, url: str, size: int) -> None:
        self.cut.append((url, size))


class Upstream:
    """Answers every request on 127.0.0.2 with ``head`` and then ``body`` (bytes, or endless chunks)."""

    def __init__(self, head: bytes, body: bytes | None) -> None:
        self.head, self.body = head, body
        self.requests: list[bytes] = []
        self.sent = 0
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.2", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.requests.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(self.head)
            if self.body is not None:
                writer.write(self.body)
            else:
                frame = chunked(b"x" * 65536, 65536)[:-len(b"0\r\nX-Trailer: y\r\n\r\n")]
                while True:
                    writer.write(frame)
                    self.sent += 65536
                    await writer.drain()
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


async def through_proxy(upstream: Upstream, limit: Limit | None, tag: str = "t1", *,
                        read: bool = True, extra: str = "") -> tuple[bytes, EgressProxy]:
    port = await upstream.start()

    async def resolver(host: str, p: int) -> list[str]:
        return ["127.0.0.2"]

    proxy = EgressProxy(POLICY, resolver)
    proxy.body_limits = lambda t: limit if t == "t1" else None
    await proxy.start()
    assert proxy.credentials is not None
    creds = proxy.credentials.tagged(tag) if tag else proxy.credentials
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(f"GET http://site.test:{port}/page HTTP/1.1\r\nHost: site.test\r\n"
                     f"Accept-Encoding: gzip, deflate, br, zstd\r\nProxy-Authorization: {creds.header}\r\n{extra}\r\n"
                     .encode())
        if not read:  # a browser whose renderer takes nothing in: the proxy must read ahead to count
            for _ in range(200):
                await asyncio.sleep(0.02)
                if limit is None or limit.cut:
                    break
        data = b""
        try:
            while chunk := await reader.read(1 << 20):
                data += chunk
        except ConnectionError:
            pass
        writer.close()
        return data, proxy
    finally:
        await proxy.close()
        assert upstream.server is not None
        upstream.server.close()


def test_a_gzip_bomb_is_cut_once_its_decoded_size_passes_the_context_limit() -> None:
    bomb = gzip.compress(b"<p>bomb</p>" * (MB // 2), compresslevel=1)  # 5.5 MB of HTML
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(bomb)
    limit = Limit(2 * MB)
    upstream = Upstream(head, bomb)
    data, proxy = run(through_proxy(upstream, limit))  # type: ignore[misc]
    assert len(limit.cut) == 1 and limit.cut[0][0].endswith("/page") and limit.cut[0][1] > 2 * MB
    assert len(data) < len(head) + len(bomb)  # the client never got the whole body
    assert proxy.stats["cut"] == 1
    assert b"Accept-Encoding: gzip, deflate, br\r\n" in upstream.requests[0]
    assert b"zstd" not in upstream.requests[0]


def test_an_endless_stream_is_cut_although_the_client_reads_nothing() -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    limit = Limit(4 * MB)
    upstream = Upstream(head, None)
    started = time.monotonic()
    run(through_proxy(upstream, limit, read=False))
    assert limit.cut and limit.cut[0][1] > 4 * MB, "the proxy waited for the client instead of counting"
    assert upstream.sent < 12 * MB  # bounded read-ahead
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(("content_type", "status", "extra"), [
    ("video/mp4", "200 OK", ""), ("audio/ogg", "200 OK", ""),
    ("application/octet-stream", "206 Partial Content", "Range: bytes=0-\r\n"),
])
def test_streamed_media_passes_whole_as_the_browser_meter_does_not_count_it(content_type: str, status: str,
                                                                             extra: str) -> None:
    # The player reads a little of a long video; the proxy's read-ahead must not cut it at max_page_mb.
    body = b"v" * (3 * MB)
    head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    limit = Limit(MB)
    data, proxy = run(through_proxy(Upstream(head, body), limit, extra=extra))  # type: ignore[misc]
    assert data.endswith(body) and not limit.cut and proxy.stats["cut"] == 0


def test_a_206_the_browser_did_not_ask_for_is_still_counted() -> None:
    body = b"v" * (3 * MB)
    head = b"HTTP/1.1 206 Partial Content\r\nContent-Length: %d\r\n\r\n" % len(body)
    limit = Limit(MB)
    run(through_proxy(Upstream(head, body), limit))
    assert limit.cut


@pytest.mark.parametrize("case", ["untagged", "other context", "not metered now"])
def test_responses_of_unmetered_contexts_pass_whole(case: str) -> None:
    body = gzip.compress(b"y" * (3 * MB))
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body)
    limit = Limit(0 if case == "not metered now" else MB)
    tag = {"untagged": "", "other context": "t2"}.get(case, "t1")
    upstream = Upstream(head, body)
    data, proxy = run(through_proxy(upstream, limit, tag=tag))  # type: ignore[misc]
    assert data.endswith(body) and not limit.cut and proxy.stats["cut"] == 0
    assert b"zstd" in upstream.requests[0]  # not metered: the browser's Accept-Encoding goes as it was


def test_tagged_credentials_need_the_proxy_user_and_a_tag() -> None:
    async def scenario() -> None:
        proxy = EgressProxy(POLICY)
        assert proxy.credentials is not None
        creds = proxy.credentials
        header = "Proxy-Authorization"
        assert proxy._authorized([(header, creds.header)]) == ""
        assert proxy._authorized([(header, creds.tagged("abc").header)]) == "abc"
        for bad in (f"{creds.username}.", f"x{creds.username}.abc", "other.abc"):
            from crawlkeeper.egress import ProxyCredentials

            assert proxy._authorized([(header, ProxyCredentials(bad, creds.password).header)]) is None
        assert proxy._authorized([(header, "Basic !!!")]) is None
        assert proxy._authorized([(header, creds.header.replace("Basic", "Bearer"))]) is None

    run(scenario())
