"""Helpers for the integration tests: config files, spawning `crawlkeeper serve`, and process-tree checks.

Every server runs as a real subprocess (``python -m crawlkeeper serve --config PATH``) with real Chromium,
talking to the loopback test site; its stderr goes to a file so tests can assert on the log.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import anyio
import psutil
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

#: Every test config must let the server reach the test site on loopback; its saved sessions stay in its folder.
SECURITY = '[security]\nallow_private = ["127.0.0.1"]\n[plugins.statefile]\ndir = "state"\n'
CALL_TIMEOUT_S = 60


def write_config(folder: Path, extra: str = "", profiles: dict[str, str] | None = None) -> Path:
    """``folder/crawlkeeper.toml`` allowing 127.0.0.1, plus ``extra`` TOML and ``profiles/<name>.toml`` files."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "profiles").mkdir(exist_ok=True)
    for name, text in (profiles or {}).items():
        (folder / "profiles" / f"{name}.toml").write_text(text, encoding="utf-8")
    path = folder / "crawlkeeper.toml"
    path.write_text(SECURITY + extra, encoding="utf-8")
    return path


def serve_argv(config: Path) -> list[str]:
    return [sys.executable, "-m", "crawlkeeper", "serve", "--config", str(config)]


def server_env(env: dict[str, str] | None = None, log_level: str | None = None) -> dict[str, str]:
    out = {**os.environ, **(env or {})}
    out.pop("CRAWLKEEPER_CONFIG", None)
    if log_level:
        out["CRAWLKEEPER_LOG_LEVEL"] = log_level
    return out


def server_params(
    config: Path, *, env: dict[str, str] | None = None, log_level: str | None = None
) -> StdioServerParameters:
    argv = serve_argv(config)
    return StdioServerParameters(
        command=argv[0], args=argv[1:], env=server_env(env, log_level), cwd=str(config.parent)
    )


def import_baseline_s() -> float:
    """Seconds a bare interpreter takes to start and import the MCP server SDK: the floor of any `initialize`.

    Timing bounds scale with it, so a machine busy with other work does not fail a test for a slowness that
    is not crawlkeeper's.
    """
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "import mcp.server.mcpserver"], check=True)
    return time.monotonic() - started


# -- processes ----------------------------------------------------------------------------------------


def find_server(config: Path, timeout: float = 5.0) -> psutil.Process:
    """The `crawlkeeper serve --config <config>` process among this test process's children."""
    deadline = time.monotonic() + timeout
    while True:
        for child in psutil.Process().children(recursive=True):
            try:
                cmdline = child.cmdline()
            except psutil.Error:
                continue
            if "serve" in cmdline and str(config) in cmdline:
                return child
        if time.monotonic() > deadline:
            raise AssertionError(f"no `crawlkeeper serve --config {config}` child process found")
        time.sleep(0.05)


def descendants(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


def is_browser(proc: psutil.Process) -> bool:
    try:
        name = (proc.name() + " " + " ".join(proc.cmdline()[:1])).lower()
    except psutil.Error:
        return False
    return "chrom" in name or "headless_shell" in name


def browsers(procs: Iterable[psutil.Process]) -> list[psutil.Process]:
    return [p for p in procs if is_browser(p)]


def survivors(procs: Iterable[psutil.Process], timeout: float) -> list[psutil.Process]:
    """The processes of ``procs`` still alive (and not zombies) after ``timeout`` seconds."""
    _, alive = psutil.wait_procs(list(procs), timeout=timeout)
    out = []
    for proc in alive:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except psutil.Error:
            pass
    return out


def describe(procs: Iterable[psutil.Process]) -> list[str]:
    out = []
    for proc in procs:
        try:
            out.append(f"{proc.pid} {proc.name()}")
        except psutil.Error:
            out.append(f"{proc.pid} (gone)")
    return out


# -- an MCP client over stdio ---------------------------------------------------------------------------


@dataclass
class Server:
    """A running `crawlkeeper serve` and the official MCP client session talking to it."""

    session: ClientSession
    process: psutil.Process
    log_path: Path
    init_s: float
    facts: dict[str, Any] = field(default_factory=dict)

    async def call(self, name: str, arguments: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        with anyio.fail_after(CALL_TIMEOUT_S):
            return await self.session.call_tool(name, arguments or {}, **kwargs)

    async def ok(self, name: str, arguments: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        """Call a tool that must succeed; its structured result."""
        result = await self.call(name, arguments, **kwargs)
        assert not result.is_error, f"{name}({arguments}) failed: {text_of(result)}"
        assert result.structured_content is not None
        return result.structured_content

    async def error(self, name: str, arguments: dict[str, Any] | None = None) -> str:
        """Call a tool that must fail; its error text."""
        result = await self.call(name, arguments)
        assert result.is_error, f"{name}({arguments}) should have failed, got {result.structured_content}"
        return text_of(result)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def text_of(result: Any) -> str:
    return "\n".join(getattr(c, "text", "") for c in result.content)


def dump(result: Any) -> str:
    """Everything a client sees of a tool result, as one string (to look for leaked secrets)."""
    return text_of(result) + json.dumps(result.structured_content)


@contextlib.asynccontextmanager
async def mcp_server(
    config: Path, *, env: dict[str, str] | None = None, log_level: str | None = None, log_name: str = "server.log"
) -> AsyncIterator[Server]:
    """Spawn the server with ``stdio_client`` + ``ClientSession`` (the older ``initialize`` handshake)."""
    log_path = config.parent / log_name
    params = server_params(config, env=env, log_level=log_level)
    with _open_log(log_path) as errlog:  # a real file: the server's stderr is redirected into it
        started = time.monotonic()
        async with stdio_client(params, errlog=errlog) as (r, w), ClientSession(r, w) as session:
            with anyio.fail_after(30):
                await session.initialize()
            init_s = time.monotonic() - started
            yield Server(session, find_server(config), log_path, init_s)


def _open_log(path: Path) -> TextIO:
    return open(path, "w", encoding="utf-8")  # the caller closes it


# -- raw JSON-RPC over a pipe ----------------------------------------------------------------------------


class RawServer:
    """`crawlkeeper serve` under plain ``subprocess.Popen``: newline-delimited JSON-RPC, every stdout line kept."""

    def __init__(self, config: Path, *, env: dict[str, str] | None = None, log_level: str | None = None) -> None:
        self.log_path = config.parent / "raw-server.log"
        self._errlog = open(self.log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            serve_argv(config), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._errlog,
            cwd=str(config.parent), env=server_env(env, log_level), start_new_session=True,
        )
        self.lines: list[bytes] = []
        self._queue: queue.Queue[bytes | None] = queue.Queue()
        self._next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()

    def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        self.send({"jsonrpc": "2.0", "method": method, **({"params": params} if params is not None else {})})

    def request(self, method: str, params: dict[str, Any] | None = None, timeout: float = 60) -> dict[str, Any]:
        """Send a request and wait for the response with its id (notifications in between are skipped)."""
        self._next_id += 1
        rid = self._next_id
        self.send({"jsonrpc": "2.0", "id": rid, "method": method, **({"params": params} if params else {})})
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no response to {method} within {timeout} s") from None
            if line is None:
                raise AssertionError(f"the server closed stdout before answering {method}; log:\n{self.log()}")
            message = json.loads(line)
            if message.get("id") == rid and ("result" in message or "error" in message):
                return message

    def initialize(self) -> dict[str, Any]:
        response = self.request("initialize", {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "crawlkeeper-raw-test", "version": "0"},
        })
        self.notify("notifications/initialized")
        return response

    def call_tool(self, name: str, arguments: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
        response = self.request("tools/call", {"name": name, "arguments": arguments}, timeout=timeout)
        assert "result" in response, response
        return response["result"]

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def log(self) -> str:
        self._errlog.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def close(self) -> None:
        """Make sure nothing outlives the test, whatever happened (kills only this server's own group)."""
        if self.proc.poll() is None:
            try:
                tree = descendants(psutil.Process(self.proc.pid))
            except psutil.Error:
                tree = []
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 9)  # start_new_session: the group is this server's alone
            self.proc.wait(5)
            for proc in survivors(tree, 0):
                with contextlib.suppress(psutil.Error):
                    proc.kill()
        self._errlog.close()
