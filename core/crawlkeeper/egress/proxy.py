"""The egress proxy: an HTTP forward proxy on 127.0.0.1 that resolves, checks and pins every connection."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from .hosts import EgressRefused, _authority_of, _bad_host, _parse_port, _split_authority
from .metering import BodyLimit, DecodedCounter, accepted_codings, metered_pipe, streamed_media
from .policy import EgressPolicy, Resolver
from .wire import (
    _HOP_BY_HOP,
    _LINGER_S,
    _MAX_HEAD,
    _BadRequest,
    _lingering_close,
    _parse_request_head,
    _pipe,
    _refusal,
    _Reply,
    _rewrite_response_head,
    _status_of,
    _within,
)

logger = logging.getLogger("crawlkeeper.egress")


@dataclass(frozen=True)
class ProxyCredentials:
    """The random user name and password one :class:`EgressProxy` requires (``repr`` never shows them)."""

    username: str
    password: str

    @classmethod
    def random(cls) -> ProxyCredentials:
        return cls("ck-" + secrets.token_hex(6), secrets.token_urlsafe(24))

    @property
    def header(self) -> str:
        """The ``Proxy-Authorization`` value that carries them (Basic)."""
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode("ascii")

    def tagged(self, tag: str) -> ProxyCredentials:
        """The same credentials with ``tag`` in the user name (``USER.TAG``): the proxy accepts them and tells the
        connections of one browser context (which authenticates with them) from those of the others."""
        return ProxyCredentials(f"{self.username}.{tag}", self.password)

    def __repr__(self) -> str:
        return "ProxyCredentials(***)"


class EgressProxy:
    """Asyncio HTTP forward proxy on 127.0.0.1 enforcing one :class:`EgressPolicy` (resolve-and-pin).

    Handles ``CONNECT host:port`` (HTTPS, wss) as a byte tunnel and absolute-URI ``http://`` requests
    (including WebSocket upgrades), one request per client connection. Refusals are ``403`` with
    ``X-Crawlkeeper-Refused: <reason>``, ``X-Crawlkeeper-Refused-Message`` (the message, ASCII) and the refusal
    message as a text body.

    Any local process can connect to 127.0.0.1, so every request must carry this proxy's own random
    credentials (``Proxy-Authorization: Basic``, see :attr:`credentials`); without them the answer is ``407``
    and nothing is resolved or contacted. ``require_auth=False`` switches that off (tests only).

    A user name may carry a tag (``USER.TAG``, see :meth:`ProxyCredentials.tagged`): one per browser context.
    ``body_limits(tag)`` (if set) says how large a decoded plain-HTTP response of that context may grow; one that
    grows past it is cut at once (both connections reset) and its :class:`BodyLimit` is told.
    """

    def __init__(
        self,
        policy: EgressPolicy,
        resolver: Resolver | None = None,
        *,
        connect_timeout: float = 10.0,
        header_timeout: float = 30.0,
        port: int = 0,
        require_auth: bool = True,
        credentials: ProxyCredentials | None = None,
    ) -> None:
        self.policy = policy
        self._resolver = resolver
        self._connect_timeout = connect_timeout
        self._header_timeout = header_timeout
        self._port = port
        self.credentials: ProxyCredentials | None = (
            (credentials or ProxyCredentials.random()) if require_auth else None
        )
        self._expected = self.credentials.password.encode() if self.credentials else None
        self.body_limits: Callable[[str], BodyLimit | None] | None = None
        self._metered = 0  # responses being metered now (they share the read-ahead budget)
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._transports: set[asyncio.BaseTransport] = set()
        self.stats: dict[str, int] = {"allowed": 0, "refused": 0, "errors": 0, "unauthorized": 0, "cut": 0}

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (without the credentials)."""
        if self._server is None:
            raise RuntimeError("EgressProxy is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def url_with_credentials(self) -> str:
        """``http://USER:PASSWORD@127.0.0.1:PORT``: what a client needs to use this proxy. Never log it."""
        url = self.url
        if self.credentials is None:
            return url
        return url.replace("://", f"://{self.credentials.username}:{self.credentials.password}@", 1)

    @property
    def port(self) -> int:
        return self._port

    async def start(self) -> int:
        """Start listening (idempotent); returns the port."""
        if self._server is None:
            server = await asyncio.start_server(
                self._handle, "127.0.0.1", self._port, limit=_MAX_HEAD, backlog=1024
            )
            if self._server is not None:  # a concurrent start() won the race
                server.close()
            else:
                self._server = server
                self._port = server.sockets[0].getsockname()[1]
        return self._port

    async def close(self) -> None:
        """Stop listening and drop every open connection and tunnel."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for transport in list(self._transports):
            transport.abort()
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        if server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 1.0)

    async def __aenter__(self) -> EgressProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- connection handling ---------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)  # type: ignore[arg-type]
        self._transports.add(writer.transport)
        upstream: list[asyncio.StreamWriter] = []
        try:
            try:
                await self._serve(reader, writer, upstream)
            except _Reply as reply:
                writer.write(reply.data)
                await _lingering_close(reader, writer)
        except asyncio.CancelledError:
            pass  # close(): asyncio's done-callback on this task must not see a cancelled task
        except Exception:  # one bad connection must never take the proxy down
            self.stats["errors"] += 1
            logger.debug("egress proxy connection failed", exc_info=True)
        finally:
            for w in (*upstream, writer):
                self._transports.discard(w.transport)
                w.close()
            if task is not None:
                self._tasks.discard(task)  # type: ignore[arg-type]

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: list[asyncio.StreamWriter]
    ) -> None:
        try:
            head = await _within(reader.readuntil(b"\r\n\r\n"), self._header_timeout)
        except asyncio.IncompleteReadError:
            return
        except asyncio.LimitOverrunError:
            raise _Reply("431 Request Header Fields Too Large", "Request header block too large.") from None
        except asyncio.TimeoutError:
            raise _Reply("408 Request Timeout", "Timed out reading the request headers.") from None
        try:
            method, target, version, headers = _parse_request_head(head)
        except _BadRequest as exc:
            raise _Reply("400 Bad Request", f"Bad request: {exc}.") from None
        tag = self._authorized(headers)
        if tag is None:
            self.stats["unauthorized"] += 1
            logger.debug("egress proxy: a request without this proxy's credentials was refused")
            raise _Reply(
                "407 Proxy Authentication Required",
                "Proxy authentication required: this proxy serves crawlkeeper's browser only.",
                [("Proxy-Authenticate", 'Basic realm="crawlkeeper"')],
            )
        if method == "CONNECT":
            await self._connect(target, reader, writer, upstream)
        elif "://" in target[:16]:
            await self._forward(method, target, version, headers, reader, writer, upstream, tag)
        else:
            raise _Reply(
                "400 Bad Request", "Bad request: this is a forward proxy; absolute URI or CONNECT needed."
            )

    def _authorized(self, headers: list[tuple[str, str]]) -> str | None:
        """None if the request lacks this proxy's credentials, else the user name's tag ("" for none)."""
        expected = self._expected
        if expected is None or self.credentials is None:
            return ""
        given = [v for k, v in headers if k.lower() == "proxy-authorization"]
        if len(given) != 1:
            return None
        scheme, _, encoded = given[0].partition(" ")
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True).partition(b":")
        except ValueError:
            return None
        # compare_digest: how much of the password matched must not show in the response time.
        if scheme.lower() != "basic" or not sep or not hmac.compare_digest(password, expected):
            return None
        name, dot, tag = user.decode("latin-1").partition(".")
        if name != self.credentials.username or (dot and not tag):
            return None
        return tag

    async def _open(
        self, host: str, port: int, upstream: list[asyncio.StreamWriter]
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Resolve-and-check, then connect to a checked address (raises _Reply on failure)."""
        try:
            addresses = await self.policy.resolve_and_check(host, port, self._resolver)
        except EgressRefused as exc:
            self.stats["refused"] += 1
            logger.debug("egress refused %s:%d (%s)", exc.host or "?", port, exc.reason)
            raise _refusal(str(exc), exc.reason) from None
        except OSError:
            self.stats["errors"] += 1
            logger.debug("egress could not resolve %s", host)
            raise _Reply("502 Bad Gateway", "Bad gateway: could not resolve the host.") from None
        # Only checked addresses are ever contacted; the name is never resolved again.
        for address in addresses:
            try:
                ureader, uwriter = await _within(
                    asyncio.open_connection(address, port, limit=_MAX_HEAD), self._connect_timeout
                )
            except (OSError, asyncio.TimeoutError):
                continue
            upstream.append(uwriter)
            self._transports.add(uwriter.transport)
            self.stats["allowed"] += 1
            logger.debug("egress allowed %s:%d", host, port)
            return ureader, uwriter
        self.stats["errors"] += 1
        logger.debug("egress could not connect to %s:%d", host, port)
        raise _Reply("502 Bad Gateway", f"Bad gateway: could not connect to port {port} of the host.")

    async def _connect(
        self,
        target: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: list[asyncio.StreamWriter],
    ) -> None:
        try:
            raw_host, port_text = _split_authority(target)
            if not raw_host or not port_text:
                raise _bad_host("CONNECT needs host:port")
            port = _parse_port(port_text, 0)
            if port == 0:
                raise _bad_host("port 0 is not valid")
        except EgressRefused as exc:
            raise _Reply("400 Bad Request", f"Bad request: {exc}") from None
        ureader, uwriter = await self._open(raw_host, port, upstream)
        writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        await self._tunnel(reader, writer, ureader, uwriter)

    async def _forward(
        self,
        method: str,
        target: str,
        version: str,
        headers: list[tuple[str, str]],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: list[asyncio.StreamWriter],
        tag: str = "",
    ) -> None:
        scheme, _, rest = target.partition("://")
        scheme = scheme.lower()
        lower = {k.lower(): v for k, v in headers}
        connection = {
            t.strip().lower()
            for k, v in headers
            if k.lower() == "connection"
            for t in v.split(",")
            if t.strip()
        }
        upgrade = "upgrade" in lower and "upgrade" in connection
        schemes = self.policy.allowed_schemes
        scheme_ok = "http" in schemes or (upgrade and "ws" in schemes) or not self.policy.enabled
        if scheme != "http" or not scheme_ok:
            self.stats["refused"] += 1
            msg = (
                f"Refused: the URL scheme {scheme[:32]!r} is not allowed through the proxy "
                "(see [security] allowed_schemes in the server config)."
            )
            raise _refusal(msg, "scheme")
        authority, path = _authority_of(rest)
        path = path.partition("#")[0]
        if not path.startswith("/"):
            path = "/" + path
        try:
            raw_host, port_text = _split_authority(authority)
            if not raw_host:
                raise _bad_host("the URL has no host")
            port = _parse_port(port_text, 80)
        except EgressRefused as exc:
            raise _Reply("400 Bad Request", f"Bad request: {exc}") from None
        ureader, uwriter = await self._open(raw_host, port, upstream)

        meter = self.body_limits(tag) if tag and self.body_limits is not None and not upgrade else None
        limit = meter.max_bytes if meter is not None else 0
        drop = set(_HOP_BY_HOP)
        if upgrade:
            drop -= {"connection"}
        else:
            drop |= connection - {"host"}
        if limit:
            drop.add("accept-encoding")  # only codings the meter can count (see accepted_codings)
        out = [f"{method} {path} {version}"]
        if "host" not in lower:
            out.append(f"Host: {authority.rpartition('@')[2]}")
        out += [f"{k}: {v}" for k, v in headers if k.lower() not in drop]
        if limit and "accept-encoding" in lower:
            offered = ", ".join(v for k, v in headers if k.lower() == "accept-encoding")
            out.append(f"Accept-Encoding: {accepted_codings(offered)}")
        if not upgrade:
            out.append("Connection: close")
        out += ["", ""]
        uwriter.write("\r\n".join(out).encode("latin-1"))

        # Bodyless requests (nearly all a browser sends) need no client->upstream pipe.
        has_body = (
            upgrade or "transfer-encoding" in lower or lower.get("content-length", "").strip("0 ") != ""
        )
        c2u = asyncio.create_task(_pipe(reader, uwriter, eof=False)) if has_body else None
        try:
            while True:
                try:
                    rhead = await ureader.readuntil(b"\r\n\r\n")
                    status = _status_of(rhead)
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, _BadRequest, OSError):
                    raise _Reply("502 Bad Gateway", "Bad gateway: invalid response from upstream.") from None
                if status == 101:
                    writer.write(rhead)
                    await self._tunnel(reader, writer, ureader, uwriter, c2u)
                    return
                if 100 <= status < 200:
                    writer.write(rhead)
                    continue
                writer.write(_rewrite_response_head(rhead))
                break
            if meter is None or not limit or method == "HEAD" or streamed_media(rhead, "range" in lower):
                await _pipe(ureader, writer, eof=False)
                return
            self._metered += 1
            try:
                counter = DecodedCounter.for_response(rhead)
                whole = await metered_pipe(ureader, writer, counter, limit, lambda: self._metered)
            finally:
                self._metered -= 1
            if not whole:
                self.stats["cut"] += 1
                logger.debug("egress cut a response at %d decoded bytes (limit %d)", counter.decoded, limit)
                try:  # first: the crawl fails with the size error, not with the browser's network error
                    meter.exceeded(f"{scheme}://{authority.rpartition('@')[2]}{path}", counter.decoded)
                except Exception:
                    logger.exception("a body limit's exceeded() failed")
                # Reset, not a clean close: the browser must see a failed load, not a short page.
                writer.transport.abort()
                uwriter.transport.abort()
        finally:
            if c2u is not None:
                c2u.cancel()

    async def _tunnel(
        self,
        creader: asyncio.StreamReader,
        cwriter: asyncio.StreamWriter,
        ureader: asyncio.StreamReader,
        uwriter: asyncio.StreamWriter,
        c2u: asyncio.Task[None] | None = None,
    ) -> None:
        """Pipe both ways; when one side finishes, half-close the other and let it finish (bounded)."""
        if c2u is None:
            c2u = asyncio.create_task(_pipe(creader, uwriter, eof=True))
        u2c = asyncio.create_task(_pipe(ureader, cwriter, eof=True))
        try:
            _, pending = await asyncio.wait({c2u, u2c}, return_when=asyncio.FIRST_COMPLETED)
            if c2u.done() and not u2c.done() and uwriter.can_write_eof() and not uwriter.is_closing():
                with contextlib.suppress(OSError, RuntimeError):
                    uwriter.write_eof()
            if pending:
                await asyncio.wait(pending, timeout=_LINGER_S)
        finally:
            c2u.cancel()
            u2c.cancel()
