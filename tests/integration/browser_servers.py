"""Real remote browsers on loopback for the fleet tests: ``playwright launch-server`` and ``run-server`` processes
(Playwright's protocol, Debian's Chromium via ``executablePath``), a Chromium with remote debugging (CDP), and a
gate that makes a CDP browser require a header."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from crawlkeeper.launch import launch_args
from crawlkeeper.local import find_browser

PLAYWRIGHT = Path(sys.executable).with_name("playwright")


@dataclass
class BrowserServer:
    """One remote browser process group; ``url`` is what goes in ``[browser] endpoints``."""

    url: str
    proc: subprocess.Popen[str]
    folder: Path
    argv: list[str] = field(default_factory=list)

    def kill(self) -> None:
        """SIGKILL the whole group (the server and its Chromium), as a crashed machine would."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                self.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


def launch_server(port: int = 0, *, cpu: int | None = None, prefix: list[str] | None = None) -> BrowserServer:
    """``playwright launch-server`` with crawlkeeper's own launch flags; its ws:// URL read from stdout.
    With ``cpu``, the server and its browser are pinned to that CPU (``taskset``); ``prefix`` runs before it (a
    benchmark's command that puts the server and its browser into a CPU-limited cgroup, say)."""
    folder = Path(tempfile.mkdtemp(prefix="ck-pw-"))
    binary = find_browser().path
    assert binary, "no Chromium found"
    config = {"executablePath": binary, "headless": True, "args": launch_args([]), "port": port, "wsPath": "/pw"}
    (folder / "launch.json").write_text(json.dumps(config), encoding="utf-8")
    argv = [str(PLAYWRIGHT), "launch-server", "--browser", "chromium", "--config", str(folder / "launch.json")]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    argv = [*(prefix or []), *argv]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True, cwd=folder)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()  # blocks until the server prints its URL (or exits)
    if not line.startswith("ws://"):
        proc.kill()
        raise RuntimeError(f"playwright launch-server did not start (printed {line!r})")
    return BrowserServer(line, proc, folder, argv)


def cdp_browser(*, cpu: int | None = None) -> BrowserServer:
    """A headless Chromium with ``--remote-debugging-port=0``; ``cdp+http://127.0.0.1:PORT``."""
    folder = Path(tempfile.mkdtemp(prefix="ck-cdp-"))
    binary = find_browser().path
    assert binary, "no Chromium found"
    argv = [binary, "--headless=new", "--remote-debugging-port=0", f"--user-data-dir={folder}", *launch_args([]),
            "about:blank"]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    port_file = folder / "DevToolsActivePort"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text().strip():
            port = port_file.read_text().split()[0]
            return BrowserServer(f"cdp+http://127.0.0.1:{port}", proc, folder, argv)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("Chromium with remote debugging did not start")


def restart(server: BrowserServer) -> BrowserServer:
    """Start a killed ``launch-server`` again on the same port (an endpoint coming back)."""
    port = int(server.url.rsplit(":", 1)[1].split("/", 1)[0])
    deadline = time.monotonic() + 10
    while True:
        try:
            return launch_server(port)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)  # the port may still be in TIME_WAIT


def run_server(*, cpu: int | None = None) -> BrowserServer:
    """``playwright run-server --unsafe``: a Playwright server that launches a browser per connection with the
    launch options the client sends in its ``x-playwright-launch-options`` header (see
    :func:`run_server_headers`); ``--unsafe`` lets those name Debian's Chromium and crawlkeeper's flags."""
    folder = Path(tempfile.mkdtemp(prefix="ck-pwrun-"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = [str(PLAYWRIGHT), "run-server", "--port", str(port), "--host", "127.0.0.1", "--path", "/pw", "--unsafe"]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True, cwd=folder)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return BrowserServer(f"ws://127.0.0.1:{port}/pw", proc, folder, argv)
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("playwright run-server did not start")


def run_server_headers() -> dict[str, str]:
    """The headers of a ``run-server`` endpoint: the browser to launch, as the official image's users send it."""
    binary = find_browser().path
    assert binary, "no Chromium found"
    options = {"executablePath": binary, "headless": True, "args": launch_args([])}
    return {"x-playwright-launch-options": json.dumps(options)}


class HeaderGate:
    """A loopback gate in front of a CDP browser that answers 401 to any request without one header (as hosted
    CDP services do), forwards the rest, and points ``/json/version``'s ``webSocketDebuggerUrl`` at itself.
    ``url`` is its ``cdp+http://`` endpoint; ``refused`` / ``admitted`` count requests."""

    def __init__(self, upstream: str, header: str, value: str) -> None:
        self.upstream_port = int(upstream.rsplit(":", 1)[1])
        self.header, self.value = header.lower(), value
        self.refused = self.admitted = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"cdp+http://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_writer = None
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            if headers.get(self.header) != self.value:
                self.refused += 1
                writer.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 12\r\nConnection: close\r\n\r\n"
                             b"Unauthorized")
                await writer.drain()
                return
            self.admitted += 1
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            if path.startswith("/json"):
                upstream_writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.upstream_port}\r\n\r\n".encode())
                answer = await upstream_reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length:\s*(\d+)", answer).group(1))  # type: ignore[union-attr]
                body = (await upstream_reader.readexactly(length)).replace(
                    f"127.0.0.1:{self.upstream_port}".encode(), f"127.0.0.1:{self.port}".encode())
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
                await writer.drain()
                return
            upstream_writer.write(head)  # the WebSocket upgrade, then both directions as they are
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer),
                                 return_exceptions=True)
        except (OSError, asyncio.IncompleteReadError, IndexError):
            pass
        finally:
            writer.close()
            if upstream_writer is not None:
                upstream_writer.close()

    def close(self) -> None:
        self._server.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()
