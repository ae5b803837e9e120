"""The deployment guide's reverse proxy, for real: Caddy (Debian's package) with TLS in front of two
`crawlkeeper serve --transport http` replicas, configured by the Caddyfile printed in docs/deploy.md.

The MCP session of the Streamable HTTP transport lives in the replica that answered ``initialize``; a request
carrying its ``Mcp-Session-Id`` that reaches the other replica gets 404. Most MCP clients keep no cookies (the
TypeScript SDK's fetch), so a balancer's sticky cookie does not hold them: the guide's Caddyfile keeps each
client on one replica by hashing its ``Authorization`` header (its token). The clients here keep no cookies.
"""

from __future__ import annotations

import http.cookiejar
import re
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from http_helpers import HttpServer, add_token, bearer, free_port, ok

pytestmark = pytest.mark.integration

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"
CLIENTS = 16  # tokens: each lands on a replica by its hash, so both replicas serve some (all on one: 2 in 65,536)
CALLS = 4


def guide_caddyfile() -> str:
    """The Caddyfile block of docs/deploy.md, as a reader copies it."""
    blocks = re.findall(r"```\n(# Caddyfile\n.*?)```", GUIDE.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) == 1, "docs/deploy.md should print one Caddyfile block"
    return blocks[0]


def loopback_caddyfile(guide: str, port: int, upstreams: list[str], storage: Path) -> str:
    """The guide's Caddyfile on loopback: its site address becomes https://127.0.0.1:PORT (a certificate from
    Caddy's own local CA, not ACME), its upstreams the two replicas. Everything else is the guide's."""
    assert "crawl.example.com {" in guide and "replica1:8080 replica2:8080" in guide, guide
    body = guide.replace("crawl.example.com {", f"https://127.0.0.1:{port} {{")
    body = body.replace("replica1:8080 replica2:8080", " ".join(upstreams))
    options = (f"{{\n\tadmin off\n\tskip_install_trust\n\tlocal_certs\n\tauto_https disable_redirects\n"
               f"\tstorage file_system {storage}\n}}\n")
    return options + body


@contextmanager
def caddy(folder: Path, caddyfile: str, port: int) -> Iterator[Path]:
    """Caddy running ``caddyfile``; yields the root certificate of its local CA once it serves TLS on ``port``."""
    binary = shutil.which("caddy")
    assert binary, "caddy is not installed: `./run test` installs Debian's package (apt-get install caddy)"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Caddyfile").write_text(caddyfile, encoding="utf-8")
    env = {"HOME": str(folder), "XDG_DATA_HOME": str(folder / "data"), "XDG_CONFIG_HOME": str(folder / "config"),
           "PATH": "/usr/bin:/bin"}
    root = folder / "storage" / "pki" / "authorities" / "local" / "root.crt"
    with open(folder / "caddy.log", "w", encoding="utf-8") as log:
        proc = subprocess.Popen([binary, "run", "--config", str(folder / "Caddyfile"), "--adapter", "caddyfile"],
                                stdout=log, stderr=log, env=env, cwd=folder, start_new_session=True)
        try:
            deadline = time.monotonic() + 30
            while not (root.exists() and _serves_tls(port, root)):  # the site's certificate comes after the CA's
                assert proc.poll() is None, (folder / "caddy.log").read_text(encoding="utf-8")
                assert time.monotonic() < deadline, (folder / "caddy.log").read_text(encoding="utf-8")
                time.sleep(0.1)
            yield root
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _serves_tls(port: int, root: Path) -> bool:
    """A TLS handshake with 127.0.0.1:``port`` succeeds with a certificate from the CA of ``root``."""
    try:
        context = ssl.create_default_context(cafile=str(root))
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock, \
                context.wrap_socket(sock, server_hostname="127.0.0.1"):
            return True
    except (OSError, ssl.SSLError):
        return False


@asynccontextmanager
async def cookieless_client(url: str, token: str, root: Path) -> AsyncIterator[ClientSession]:
    """The official SDK's Streamable HTTP client, trusting Caddy's CA and keeping no cookie (a jar that
    accepts none), as the TypeScript SDK's fetch does."""
    jar = http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    verify = ssl.create_default_context(cafile=str(root))
    timeout = httpx2.Timeout(30, read=300)
    async with (
        httpx2.AsyncClient(headers=bearer(token), cookies=jar, verify=verify, timeout=timeout,
                           trust_env=False) as client,
        streamable_http_client(url, http_client=client) as streams,
        ClientSession(streams[0], streams[1]) as session,
    ):
        with anyio.fail_after(30):
            await session.initialize()
        yield session


@pytest.mark.anyio
async def test_the_guides_balancer_keeps_each_client_on_its_replica(tmp_path: Path) -> None:
    """Sixteen clients with their own tokens, none keeping cookies, each `initialize` and four calls through the
    guide's Caddyfile (TLS, two replicas): every call succeeds (a request routed to the replica that does not
    hold its MCP session gets 404: with the guide's former `lb_policy cookie` that was about every other
    request), each client's requests all reach one replica, and both replicas serve."""
    toml = '[browser]\nwarmup = "off"\n'
    env = {"CRAWLKEEPER_LOG_LEVEL": "INFO"}
    replicas = [HttpServer(tmp_path, toml, env=env, log_name=f"replica{i}.log") for i in (1, 2)]
    names = [f"client{i}" for i in range(CLIENTS)]
    with ThreadPoolExecutor(4) as pool:
        tokens = dict(zip(names, pool.map(lambda name: add_token(replicas[0].config, name), names), strict=True))
    port = free_port()
    caddyfile = loopback_caddyfile(guide_caddyfile(), port, [f"127.0.0.1:{r.port}" for r in replicas],
                                   tmp_path / "caddy" / "storage")
    try:
        async with anyio.create_task_group() as tg:
            for replica in replicas:
                tg.start_soon(anyio.to_thread.run_sync, replica.start)
        with caddy(tmp_path / "caddy", caddyfile, port) as root:
            url = f"https://127.0.0.1:{port}/mcp"

            async def client(name: str) -> None:
                async with cookieless_client(url, tokens[name], root) as session:
                    for _ in range(CALLS):
                        assert (await ok(session, "list_sessions"))["sessions"] == []

            # One client after the other: with ten at once, Debian's Caddy 2.6.2 cut about one response in a
            # hundred ("reading from backend: use of closed network connection"; straight to a replica, none).
            for name in names:
                await client(name)
    finally:
        for replica in replicas:
            replica.close()
    served = [set(re.findall(r"(?:GET|POST|DELETE) /mcp client=(\S+) ", r.log())) for r in replicas]
    assert served[0] | served[1] == set(names), served
    assert not served[0] & served[1], f"a client's requests reached both replicas: {served[0] & served[1]}"
    assert served[0] and served[1], f"one replica served every client: {served}"
    for replica in replicas:
        log = replica.log()
        assert "Traceback" not in log and not any(token in log for token in tokens.values()), log[-3000:]
