"""The Streamable HTTP transport: one crawlkeeper for a team, always authenticated.

Built on the MCP SDK's own pieces: ``MCPServer(token_verifier=..., auth=AuthSettings(...))`` answers 401
with ``WWW-Authenticate: Bearer`` and binds each MCP session to the credential that opened it;
``streamable_http_app()`` serves ``/mcp`` (and, with ``[server] issuer_url``, the OAuth protected-resource
metadata). Around it, :class:`Gate` adds what a shared server needs whatever address it binds to: Host and
Origin checks (the SDK turns its own off for non-loopback binds), a body-size cap, ``/healthz``, one access
log line per request, cancellation of a call whose client hung up, and draining at SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import signal
import time
from collections.abc import Iterator

import anyio
import uvicorn
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import ConfigDict
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from . import calls
from .app import App
from .config import ServerSettings
from .principal import Principal

log = logging.getLogger("crawlkeeper.http")
access_log = logging.getLogger("crawlkeeper.http.access")

MCP_PATH = "/mcp"
HEALTH_PATH = "/healthz"
APP_SHUTDOWN_BUDGET_S = 8.0


# -- authentication ------------------------------------------------------------------------------


class PrincipalToken(AccessToken):
    """The SDK's access token, carrying the :class:`Principal` the verifying plugin returned."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    principal: Principal


class HookTokenVerifier:
    """The SDK's ``TokenVerifier``, answered by the ``crawlkeeper_verify_token`` hook (in a worker thread,
    so a verifier fetching keys never stalls other clients)."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def verify_token(self, token: str) -> AccessToken | None:
        principal = await anyio.to_thread.run_sync(self._verify, token)
        if principal is None:
            return None
        return PrincipalToken(token=token, client_id=principal.id, subject=principal.id,
                              scopes=list(principal.scopes), principal=principal)

    def _verify(self, token: str) -> Principal | None:
        # The argument is a secret: the hook machinery logs a failure by plugin and exception type only
        # (plugins.SECRET_ARGUMENT_HOOKS), and so does this, since a message might quote the token.
        try:
            result = self.app.hooks.call("crawlkeeper_verify_token", token=token)
        except Exception as exc:
            plugin = getattr(exc, "plugin", None) or "unknown"
            log.error("plugin '%s' failed in crawlkeeper_verify_token (%s); the request is refused",
                      plugin, type(exc).__name__)
            return None
        if result is not None and not isinstance(result, Principal):
            log.error("crawlkeeper_verify_token returned %s, not a Principal; the request is refused",
                      type(result).__name__)
            return None
        return result


# -- Host and Origin ----------------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_pattern(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _with_ports(name: str) -> list[str]:
    """``name`` as Host patterns: as given when it names a port, else with and without any port."""
    if name.startswith("["):
        return [name] if "]:" in name else [name, f"{name}:*"]
    if name.count(":") == 1:
        return [name]
    name = _host_pattern(name)  # a bare IPv6 address
    return [name, f"{name}:*"]


def allowed_hosts(settings: ServerSettings, host: str) -> list[str]:
    """Host header values accepted: the bind address (and, for loopback, the loopback names), plus
    ``[server] allowed_hosts``; each with any port unless it names one."""
    names = [host]
    if _is_loopback(host):
        names += ["127.0.0.1", "localhost", "::1"]
    out: list[str] = []
    for name in [*names, *settings.allowed_hosts]:
        for item in _with_ports(name):
            if item not in out:
                out.append(item)
    return out


def allowed_origins(settings: ServerSettings, host: str, port: int) -> list[str]:
    """Origin header values accepted: the server's own origin under each of its Host names (a same-origin
    request, which no DNS-rebinding page can send), plus ``[server] allowed_origins``. No other by default."""
    names = [host, *(["127.0.0.1", "localhost", "::1"] if _is_loopback(host) else [])]
    names += [h for h in settings.allowed_hosts if len(_with_ports(h)) == 2]  # those naming no port
    own = [f"http://{_host_pattern(name)}:{port}" for name in names]
    return list(dict.fromkeys([*own, *settings.allowed_origins]))


def _matches(value: str, allowed: list[str]) -> bool:
    return any(value == item or (item.endswith(":*") and value.startswith(item[:-1])) for item in allowed)


# -- the gate around the SDK's app ----------------------------------------------------------------


class Gate:
    """ASGI middleware in front of the SDK's Streamable HTTP app."""

    def __init__(self, inner: ASGIApp, settings: ServerSettings, host: str, port: int = 0) -> None:
        self.inner = inner
        self.hosts = allowed_hosts(settings, host)
        self.origins = allowed_origins(settings, host, port)
        self.max_body = settings.max_body_kb * 1024
        self.draining = False
        self.in_flight = 0  # POSTs being answered: calls that a graceful shutdown lets finish
        self._idle = asyncio.Event()
        self._idle.set()

    async def wait_idle(self, within_s: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), within_s)
            return True
        except asyncio.TimeoutError:
            return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.inner(scope, receive, send)
            return
        if scope["type"] != "http":  # websockets: not part of MCP
            await send({"type": "websocket.close", "code": 1008})
            return
        started = time.monotonic()
        method, path = scope["method"], scope["path"]  # path never includes the query string
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if path == HEALTH_PATH and method in ("GET", "HEAD"):
            await _plain(send, 503 if self.draining else 200, "draining" if self.draining else "ok")
            return
        # Host first: a DNS-rebinding page gets nothing, not even token verification.
        if not _matches(headers.get("host", ""), self.hosts):
            await _plain(send, 421, "Invalid Host header: add the name clients use to [server] allowed_hosts")
            self._log(method, path, None, None, 421, "refused: bad Host", started)
            return
        origin = headers.get("origin")
        if origin and not _matches(origin, self.origins):
            await _plain(send, 403, "Invalid Origin header: browser origins must be in [server] allowed_origins")
            self._log(method, path, None, None, 403, "refused: bad Origin", started)
            return
        if self.draining:
            await _plain(send, 503, "shutting down; retry on another instance", [(b"connection", b"close")])
            self._log(method, path, None, None, 503, "refused: draining", started)
            return
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await _plain(send, 413, f"request body over [server] max_body_kb ({self.max_body // 1024} KB)",
                         [(b"connection", b"close")])
            self._log(method, path, None, None, 413, "refused: body too large", started)
            return
        await self._serve(scope, receive, send, method, path, started)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, method: str, path: str,
                     started: float) -> None:
        info = calls.CallInfo()
        status: list[int] = []
        body = bytearray()
        done = False
        counted = method == "POST"

        async def watched_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(body) < 65536:
                body.extend(message.get("body", b"")[: 65536 - len(body)])
            elif message["type"] == "http.disconnect" and not done:
                info.gone.set()  # the client hung up before its answer: its tool call is cancelled
            return message

        async def watched_send(message: Message) -> None:
            nonlocal done
            if message["type"] == "http.response.start":
                status.append(message["status"])
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                done = True
            await send(message)

        if counted:
            self.in_flight += 1
            self._idle.clear()
        token = calls.set_current(info)
        try:
            await self.inner(scope, watched_receive, watched_send)
        finally:
            calls.reset(token)
            if counted:
                self.in_flight -= 1
                if self.in_flight == 0:
                    self._idle.set()
            user = scope.get("user")
            client = getattr(getattr(user, "access_token", None), "principal", None)
            rpc = info.tool or _rpc_method(bytes(body))
            code = status[0] if status else None
            if info.outcome:
                outcome = info.outcome
            elif info.gone.is_set():  # the tool is being cancelled right now
                outcome = "cancelled (client gone)" if info.tool else "client gone"
            else:
                outcome = "ok" if code and code < 400 else "refused" if code else "no answer"
            self._log(method, path, client.name if client else None, rpc, code, outcome, started)

    def _log(self, method: str, path: str, client: str | None, what: str | None, status: int | None,
             outcome: str, started: float) -> None:
        access_log.info("%s %s client=%s call=%s status=%s outcome=%s %.3fs", method, path, client or "-",
                        what or "-", status if status is not None else "-", outcome, time.monotonic() - started)


def _rpc_method(body: bytes) -> str | None:
    """The JSON-RPC method of a request body (``tools/list``...), for the access log; never its params."""
    if not body:
        return None
    try:
        message = json.loads(body)
    except ValueError:
        return "(malformed JSON)"
    if isinstance(message, list):
        return "batch"
    if isinstance(message, dict):
        method = message.get("method")
        if method == "tools/call":
            name = (message.get("params") or {}).get("name")
            return f"tools/call {name}" if isinstance(name, str) else method
        return method if isinstance(method, str) else ("response" if "result" in message else None)
    return None


async def _plain(send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = (text + "\n").encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
        *(extra or []),
    ]})
    await send({"type": "http.response.body", "body": body})


# -- building and serving -------------------------------------------------------------------------


def base_url(host: str, port: int) -> str:
    return f"http://{_host_pattern(host)}:{port}"


def build_http_app(app: App, *, host: str, port: int) -> Gate:
    """The ASGI app for ``app``: the SDK's authenticated Streamable HTTP app at ``/mcp`` inside a :class:`Gate`."""
    from .server import build_server

    settings = app.config.settings.server
    if settings.issuer_url:
        # OAuth-capable clients find the authorization server through this server's protected-resource
        # metadata (the SDK publishes it under /.well-known/oauth-protected-resource).
        auth = AuthSettings(issuer_url=settings.issuer_url,
                            resource_server_url=settings.public_url or base_url(host, port) + MCP_PATH,
                            validate_token_resource=False)  # audience checks belong to the verifying plugin
    else:
        # Static tokens are issued by this server itself; nothing is published.
        auth = AuthSettings(issuer_url=base_url(host, port), resource_server_url=None)
    server = build_server(app, owns_app=False, token_verifier=HookTokenVerifier(app), auth=auth)
    security = TransportSecuritySettings(enable_dns_rebinding_protection=True,
                                         allowed_hosts=allowed_hosts(settings, host),
                                         allowed_origins=allowed_origins(settings, host, port))
    inner = server.streamable_http_app(streamable_http_path=MCP_PATH, transport_security=security, host=host,
                                       max_request_body_size=settings.max_body_kb * 1024)
    app.limiter.set_client_limits(settings.max_concurrent_crawls_per_client, settings.max_queued_calls_per_client)
    app.sessions.max_per_owner = settings.max_sessions_per_client
    return Gate(inner, settings, host, port)


class _Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol plus a deadline for a request's headers: a client trickling them (slowloris)
    is disconnected instead of holding a connection forever. uvicorn has no such timeout of its own."""

    _header_timer: asyncio.TimerHandle | None = None
    header_timeout_s = 10.0  # set from [server] header_timeout_s by serve_http

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def _between_requests(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def data_received(self, data: bytes) -> None:
        if self._between_requests():
            self._arm()
        super().data_received(data)
        if not self._between_requests():
            self._disarm()

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self._between_requests() and not self.transport.is_closing():
            log.info("closing a connection that sent no complete request within %g s", self.header_timeout_s)
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Signals are ours (see serve_http): uvicorn would re-raise SIGTERM after serving (exit -15) and
        # tell sse-starlette to cut every open stream, in-flight answers included.
        yield


def check_bind(settings: ServerSettings, host: str) -> list[str]:
    """Warnings for the operator about this bind (printed to stderr at start)."""
    warnings = []
    if not _is_loopback(host):
        warnings.append(
            f"crawlkeeper is listening on {host}, beyond this machine: it speaks plain HTTP, so put a TLS "
            "reverse proxy in front (see README, 'Serving a team') and never expose this port directly")
        if not settings.allowed_hosts:
            warnings.append("[server] allowed_hosts is empty: only requests whose Host header is "
                            f"'{host}' are accepted; list the names clients use")
    return warnings


def serve_http(app: App, *, host: str | None = None, port: int | None = None) -> None:
    """Serve MCP over Streamable HTTP until SIGTERM/SIGINT; then drain and shut down in order (exit 0)."""
    settings = app.config.settings.server
    host = host or settings.host
    port = settings.port if port is None else port
    for warning in check_bind(settings, host):
        log.warning("%s", warning)
    gate = build_http_app(app, host=host, port=port)
    _Protocol.header_timeout_s = settings.header_timeout_s
    config = uvicorn.Config(
        gate, host=host, port=port, lifespan="on", log_config=None, access_log=False, http=_Protocol, ws="none",
        timeout_keep_alive=5, timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 2,
        server_header=False,
    )
    server = _Server(config)

    async def main() -> None:
        from sse_starlette.sse import AppStatus

        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await app.startup()
        serving = asyncio.ensure_future(server.serve())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not serving.done():
                log.info("signal received: no new requests; waiting up to %g s for %d call(s) in flight",
                         settings.shutdown_grace_s, gate.in_flight)
                gate.draining = True
                server.should_exit = True  # uvicorn closes its listening socket within 0.1 s
                if not await gate.wait_idle(settings.shutdown_grace_s):
                    log.warning("%d call(s) still running after %g s; cutting them off",
                                gate.in_flight, settings.shutdown_grace_s)
                AppStatus.should_exit = True  # now end the open SSE streams (GET listeners)
                await serving
        finally:
            stopping.cancel()
            try:
                await asyncio.wait_for(asyncio.shield(app.shutdown()), APP_SHUTDOWN_BUDGET_S)
            except asyncio.TimeoutError:
                log.error("shutdown took longer than %.1f s; exiting anyway", APP_SHUTDOWN_BUDGET_S)
        if serving.done() and not serving.cancelled() and serving.exception() is not None:
            raise serving.exception()  # type: ignore[misc]
        if not server.started:
            raise SystemExit(f"crawlkeeper: could not listen on {host}:{port} (see the log above)")
        log.info("stopped")

    asyncio.run(main())


__all__ = ["Gate", "HookTokenVerifier", "PrincipalToken", "allowed_hosts", "build_http_app", "serve_http"]
