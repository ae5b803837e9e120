"""Counting a plain-HTTP response's *decoded* size as it passes the egress proxy, and cutting it at a limit.

The browser's own meter (``crawlkeeper.guard.PageMeter``) sees bytes only as fast as the page's renderer takes
them in (2-3 MB/s of HTML), so a decompression bomb or an endless stream at ``max_page_mb = 20`` was refused
only ~8 s in. The proxy sees the bytes at network speed. It undoes the chunked framing and every content coding
the browser would (gzip, deflate, br), only to count: output is produced in bounded pieces and thrown away, and
decoding stops once the limit is passed, so one response costs at most ``limit`` bytes of inflating and
``_PIECE`` bytes of memory. It also reads ahead of a slow browser (bounded, see :func:`metered_pipe`): the
browser applies back-pressure at its renderer's speed, and a proxy that waited for it would count no faster.

HTTPS is a tunnel the proxy cannot read: there, the browser's meter is the one that counts.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable
from typing import Any, Protocol

try:  # a dependency of crawl4ai's HTTP stack; without it br is not offered to servers (see accepted_codings)
    import brotli as _brotli
except ImportError:  # pragma: no cover - depends on the environment
    _brotli = None

_PIECE = 256 * 1024  # decoded bytes produced per step (then thrown away): bounds the memory of counting
_MAX_SIZE_LINE = 4096
#: The proxy's read-ahead over all metered responses together (each gets its share, at most its limit).
READ_AHEAD_BUDGET = 96 * 1_048_576


class BodyLimit(Protocol):
    """What the proxy asks about the connections of one browser context (see ``EgressProxy.body_limits``)."""

    @property
    def max_bytes(self) -> int:
        """The most decoded bytes one response may have (0: not metered now)."""

    def exceeded(self, url: str, size: int) -> None:
        """A response of ``url`` passed :attr:`max_bytes` (``size`` decoded bytes so far); it is being cut."""


_COUNTABLE = ("gzip", "x-gzip", "deflate", "identity")


def accepted_codings(offered: str) -> str:
    """The ``Accept-Encoding`` the proxy sends upstream for a metered request: the browser's own list (``offered``)
    narrowed to the codings the meter can count, q-values kept. Never a coding the browser did not offer:
    Chromium fails a response whose coding it did not ask for (it offers ``br`` only over HTTPS or to localhost,
    and ``identity`` for range requests). ``zstd`` and ``*`` are dropped (a server could then pick a coding the
    meter cannot undo); when nothing is left, ``identity``."""
    countable = _COUNTABLE + (("br",) if _brotli is not None else ())
    kept = [token.strip() for token in offered.split(",")
            if token.split(";", 1)[0].strip().lower() in countable]
    return ", ".join(kept) or "identity"


def streamed_media(head: bytes, ranged: bool) -> bool:
    """A response the browser streams through its media pipeline (audio/video, or the range of a file a
    ``ranged`` request asked for), not counted, as the page's DevTools meter does not count Media: the proxy's
    read-ahead would otherwise cut any video longer than ``max_page_mb`` that the player only ever reads a little
    of. A body sent with such a type but read whole by a script is still counted by the DevTools meter (as
    Fetch/XHR), at the renderer's speed."""
    lines = head.split(b"\r\n")
    if ranged and b" 206 " in lines[0] + b" ":
        return True
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-type":
            return value.strip().lower().startswith((b"audio/", b"video/"))
    return False


class _Inflate:
    """One content coding undone in bounded steps."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self._z: Any = None
        self._br: Any = None
        self._head = b""  # deflate: the first bytes, to tell zlib-wrapped from raw deflate
        self.finished = False
        if coding in ("gzip", "x-gzip"):
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif coding == "br":
            self._br = _brotli.Decompressor() if _brotli is not None else None
        elif coding != "deflate":
            raise ValueError(coding)

    def feed(self, data: bytes, emit: Callable[[bytes], bool]) -> bool:
        """Decode ``data``, passing each decoded piece to ``emit``; stop (False) when ``emit`` says so."""
        if self.finished:
            return True  # bytes after the end of the stream: Chromium ignores them too
        if self.coding == "deflate" and self._z is None:
            self._head += data
            if len(self._head) < 2:
                return True
            data, self._head = self._head, b""
            zlib_wrapped = (data[0] & 0x0F) == 8 and (data[0] << 8 | data[1]) % 31 == 0
            self._z = zlib.decompressobj(zlib.MAX_WBITS if zlib_wrapped else -zlib.MAX_WBITS)
        if self._br is not None:
            return self._feed_brotli(data, emit)
        if self._z is None:  # br without the brotli module: count the bytes as they are (a lower bound)
            return emit(data)
        z = self._z
        while data:
            piece = z.decompress(data, _PIECE)
            data = z.unconsumed_tail
            if piece and not emit(piece):
                return False
            if z.eof:
                self.finished = True
                return True
        return True

    def _feed_brotli(self, data: bytes, emit: Callable[[bytes], bool]) -> bool:
        br = self._br
        piece = br.process(data, output_buffer_limit=_PIECE)
        while True:
            if piece and not emit(piece):
                return False
            if br.is_finished():
                self.finished = True
                return True
            if br.can_accept_more_data():
                return True
            piece = br.process(b"", output_buffer_limit=_PIECE)


class DecodedCounter:
    """The decoded size of one response body, fed the raw bytes as they come from the server.

    A body that cannot be decoded (bad framing, corrupt compression, an unknown coding) is counted as its raw
    bytes from there on: the browser fails such a response itself, and its own meter still counts."""

    def __init__(self, *, chunked: bool, codings: list[str]) -> None:
        self.decoded = 0
        self.limit = 0
        self._chunked = chunked
        self._chunk_left = 0  # bytes of chunk data still to come in the current chunk
        self._state = "size"  # size | data | crlf | trailer | done
        self._line = b""
        self._raw = False
        try:
            # Content-Encoding lists the codings in the order they were applied: undo them last to first.
            self._layers = [_Inflate(c) for c in reversed(codings)]
        except ValueError:
            self._layers, self._raw = [], True

    @classmethod
    def for_response(cls, head: bytes) -> DecodedCounter:
        """A counter for the response whose head (status line and headers) is ``head``."""
        chunked, codings = False, []
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"transfer-encoding":
                chunked = chunked or b"chunked" in value.lower()
            elif name == b"content-encoding":
                codings += [c.strip().decode("latin-1").lower() for c in value.split(b",")
                            if c.strip() and c.strip().lower() != b"identity"]
        return cls(chunked=chunked, codings=codings)

    def feed(self, data: bytes, limit: int) -> bool:
        """Count ``data`` (raw bytes of the body); False once the decoded size passed ``limit``."""
        self.limit = limit
        if self._raw:
            return self._emit(data)
        try:
            if not self._chunked:
                return self._decode(data)
            return self._unchunk(data)
        except Exception:  # zlib.error, brotli.error, ValueError from the framing: count raw from here on
            self._raw = True
            return self._emit(data)

    def _emit(self, piece: bytes) -> bool:
        self.decoded += len(piece)
        return self.decoded <= self.limit

    def _decode(self, data: bytes, depth: int = 0) -> bool:
        if depth == len(self._layers):
            return self._emit(data)
        return self._layers[depth].feed(data, lambda piece: self._decode(piece, depth + 1))

    def _unchunk(self, data: bytes) -> bool:
        view = memoryview(data)
        while len(view):
            if self._state == "data":
                take = view[: self._chunk_left]
                self._chunk_left -= len(take)
                view = view[len(take):]
                if not self._decode(bytes(take)):
                    return False
                if not self._chunk_left:
                    self._state, self._line = "crlf", b""
            elif self._state == "done":
                return True
            else:  # a line: a chunk size, the CRLF after a chunk's data, or a trailer line
                end = bytes(view[:_MAX_SIZE_LINE]).find(b"\n")
                if end < 0:
                    self._line += bytes(view)
                    if len(self._line) > _MAX_SIZE_LINE:
                        raise ValueError("chunk size line too long")
                    return True
                line, view = self._line + bytes(view[:end]), view[end + 1:]
                self._line = b""
                self._end_of_line(line.rstrip(b"\r"))
        return True

    def _end_of_line(self, line: bytes) -> None:
        if self._state == "crlf":
            if line:
                raise ValueError("chunk data longer than its size")
            self._state = "size"
        elif self._state == "size":
            size = int(line.partition(b";")[0].strip(), 16)  # ValueError on junk
            if size < 0:
                raise ValueError("negative chunk size")
            self._chunk_left = size
            self._state = "data" if size else "trailer"
        elif not line:  # the empty line after the trailers ends the body
            self._state = "done"


def _budget_share(active: int) -> int:
    return max(1_048_576, READ_AHEAD_BUDGET // max(1, active))


async def metered_pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counter: DecodedCounter, limit: int,
    active: Callable[[], int], read_size: int = 64 * 1024,
) -> bool:
    """Copy a response body from ``reader`` to ``writer`` while counting it; False as soon as its decoded size
    passed ``limit`` (the caller cuts the connection).

    It reads ahead of a slow client, up to ``limit`` raw bytes (never more than the decoded count, which is what
    is limited) and its share of :data:`READ_AHEAD_BUDGET` among the ``active()`` metered responses; beyond that
    it waits for the client like a plain pipe."""
    try:
        while True:
            data = await reader.read(read_size)
            if not data:
                return True
            if not counter.feed(data, limit):
                return False
            if writer.transport.is_closing():  # the browser went away (page closed): stop reading ahead
                return True
            writer.write(data)
            if writer.transport.get_write_buffer_size() > min(limit, _budget_share(active())):
                await writer.drain()
    except (ConnectionError, OSError, RuntimeError):
        return True
