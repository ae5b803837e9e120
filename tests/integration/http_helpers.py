"""Helpers for the HTTP transport's integration tests: `crawlkeeper serve --transport http` as a real
subprocess on a free loopback port, tokens made with the real `crawlkeeper token add`, and the official
MCP Python SDK's Streamable HTTP client."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import psutil
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from helpers import CALL_TIMEOUT_S, descendants, server_env, survivors, text_of, write_config


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def add_token(config: Path, name: str, *, admin: bool = False) -> str:
    """`crawlkeeper token add NAME`: the token is the last line of stdout."""
    argv = [sys.executable, "-m", "crawlkeeper", "token", "add", name, "--config", str(config)]
    out = subprocess.run(argv + (["--admin"] if admin else []), capture_output=True, text=True, check=True,
                         env=server_env(), cwd=str(config.parent))
    return out.stdout.strip().splitlines()[-1]


def token_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "crawlkeeper", "token", *args, "--config", str(config)],
                          capture_output=True, text=True, env=server_env(), cwd=str(config.parent))


class HttpServer:
    """A running `crawlkeeper serve --transport http` with its own config, tokens file and log."""

    def __init__(self, folder: Path, extra_toml: str = "", *, host: str = "127.0.0.1",
                 env: dict[str, str] | None = None, log_name: str = "http-server.log") -> None:
        self.config = write_config(folder, '[server]\ntokens_file = "tokens.json"\n' + extra_toml)
        self.port = free_port()
        self.host = host
        self.log_path = folder / log_name  # replicas on one config (one folder) each log to their own file
        self._env = env
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/mcp"

    def start(self, timeout: float = 60) -> HttpServer:
        argv = [sys.executable, "-m", "crawlkeeper", "serve", "--transport", "http", "--host", self.host,
                "--port", str(self.port), "--config", str(self.config)]
        self._log = open(self.log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._log,
                                     cwd=str(self.config.parent), env=server_env(self._env),
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx2.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx2.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the server did not answer /healthz within {timeout} s:\n{self.log()}")
            time.sleep(0.1)

    def process(self) -> psutil.Process:
        assert self.proc is not None
        return psutil.Process(self.proc.pid)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def terminate(self, timeout: float = 20) -> int | None:
        """SIGTERM, then the exit code (None if it did not exit in time)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            tree = descendants(psutil.Process(self.proc.pid))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 9)
            self.proc.wait(5)
            for proc in survivors(tree, 0):
                with contextlib.suppress(psutil.Error):
                    proc.kill()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        with contextlib.suppress(AttributeError):
            self._log.close()

    def __enter__(self) -> HttpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


@contextlib.asynccontextmanager
async def http_client(url: str, token: str | None) -> AsyncIterator[ClientSession]:
    """The official SDK's Streamable HTTP client, initialized (older handshake), with ``token`` as bearer."""
    async with (
        create_mcp_http_client(headers=bearer(token)) as http,
        streamable_http_client(url, http_client=http) as streams,
        ClientSession(streams[0], streams[1]) as session,
    ):
        with anyio.fail_after(30):
            await session.initialize()
        yield session


async def ok(session: ClientSession, name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    with anyio.fail_after(CALL_TIMEOUT_S):
        result = await session.call_tool(name, arguments or {})
    assert not result.is_error, f"{name}({arguments}) failed: {text_of(result)}"
    assert result.structured_content is not None
    return result.structured_content


async def error(session: ClientSession, name: str, arguments: dict[str, Any] | None = None) -> str:
    with anyio.fail_after(CALL_TIMEOUT_S):
        result = await session.call_tool(name, arguments or {})
    assert result.is_error, f"{name}({arguments}) should have failed, got {result.structured_content}"
    return text_of(result)
