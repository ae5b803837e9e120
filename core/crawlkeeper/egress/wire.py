"""HTTP/1.1 on the wire for the egress proxy: request heads, error responses, piping bytes."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Sequence
from typing import TypeVar

_T = TypeVar("_T")
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET_RE = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces or controls


_READ_SIZE = 64 * 1024
_MAX_HEAD = 64 * 1024
_LINGER_S = 5.0
_HOP_BY_HOP = frozenset({"proxy-connection", "proxy-authorization", "keep-alive", "connection"})


_timeout = getattr(asyncio, "timeout", None)  # Python >= 3.11: no extra task per timed await


async def _within(awaitable: Awaitable[_T], seconds: float) -> _T:
    """``await`` with a deadline (raises asyncio.TimeoutError), as cheaply as the Python version allows."""
    if _timeout is None:  # pragma: no cover - Python 3.10
        return await asyncio.wait_for(awaitable, seconds)
    async with _timeout(seconds):
        return await awaitable


class _BadRequest(Exception):
    pass


class _Reply(Exception):
    """An error response to send the client before closing the connection."""

    def __init__(self, status: str, message: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(status)
        self.data = _response(status, message + "\n", headers)


_CONTROLS_RE = re.compile(r"[\x00-\x1f\x7f]")


def _refusal(message: str, reason: str) -> _Reply:
    """A 403 that tells the browser side why: the reason code and the message, each as a header (the body of a
    refused navigation is not readable from the page's response events)."""
    safe = _CONTROLS_RE.sub(" ", message.encode("ascii", "backslashreplace").decode("ascii"))
    return _Reply("403 Forbidden", message,
                  [("X-Crawlkeeper-Refused", reason), ("X-Crawlkeeper-Refused-Message", safe[:1000])])


def _response(status: str, body: str, headers: Sequence[tuple[str, str]] = ()) -> bytes:
    data = body.encode("utf-8", "replace")
    head = [f"HTTP/1.1 {status}", "Content-Type: text/plain", f"Content-Length: {len(data)}"]
    head += [f"{k}: {v}" for k, v in headers]
    head += ["Connection: close", "Proxy-Connection: close", "", ""]
    return "\r\n".join(head).encode("latin-1") + data


def _parse_request_head(head: bytes) -> tuple[str, str, str, list[tuple[str, str]]]:
    lines = head[:-4].decode("latin-1").split("\r\n")
    while lines and not lines[0]:
        lines.pop(0)
    if not lines:
        raise _BadRequest("empty request")
    parts = lines[0].split(" ")
    if (
        len(parts) != 3
        or not _TOKEN_RE.fullmatch(parts[0])
        or parts[2] not in ("HTTP/1.1", "HTTP/1.0")
        or not _TARGET_RE.fullmatch(parts[1])
    ):
        raise _BadRequest("malformed request line")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN_RE.fullmatch(name) or "\r" in line or "\n" in line or "\0" in line:
            raise _BadRequest("malformed header line")
        headers.append((name, value.strip(" \t")))
    return parts[0], parts[1], parts[2], headers


def _rewrite_response_head(head: bytes) -> bytes:
    """Tell the client the connection closes after this response (one request per proxy connection)."""
    lines = head[:-4].split(b"\r\n")
    kept = [lines[0]] + [
        ln
        for ln in lines[1:]
        if ln.partition(b":")[0].strip().lower() not in (b"connection", b"proxy-connection", b"keep-alive")
    ]
    kept += [b"Connection: close", b"Proxy-Connection: close", b"", b""]
    return b"\r\n".join(kept)


def _status_of(head: bytes) -> int:
    parts = head.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit() or len(parts[1]) != 3:
        raise _BadRequest("malformed upstream response")
    return int(parts[1])


async def _lingering_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """After an error response: half-close and discard what the client still sends (bounded), so closing
    with unread input does not reset the connection before the client has read the response."""
    with contextlib.suppress(OSError, RuntimeError):
        if writer.can_write_eof():
            writer.write_eof()
    deadline = asyncio.get_running_loop().time() + 1.0
    budget = 1 << 20
    with contextlib.suppress(OSError, asyncio.TimeoutError, asyncio.LimitOverrunError):
        while budget > 0:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            data = await asyncio.wait_for(reader.read(_READ_SIZE), remaining)
            if not data:
                break
            budget -= len(data)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, eof: bool) -> None:
    """Copy until EOF or error; optionally half-close the destination afterwards."""
    try:
        while True:
            data = await reader.read(_READ_SIZE)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError, RuntimeError):
        return
    if eof and not writer.is_closing() and writer.can_write_eof():
        with contextlib.suppress(OSError, RuntimeError):
            writer.write_eof()
