"""The issue-14 trial, repeated as a test: a third-party plugin written from docs/plugins.md alone (an auth method
that adds an ``Authorization: Bearer`` header from an environment variable, plus a closing hook), installed as its
own distribution in a throwaway venv (found only through its entry point), used over stdio while the config also
sets ``[browser] extra_headers``.

Nothing may be lost silently: the site receives both the config's header and the plugin's; the closing hook sees
``closed`` for a closed session and ``temporary`` for a session-less crawl's hidden session; the token is never
shown; a profile with a misspelled key and a plugin breaking a rule are caught at start-up, naming file, key,
plugin and rule.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from helpers import server_env, write_config

pytestmark = pytest.mark.integration

TOKEN = "tok-trial-0123456789"

PLUGIN = '''"""Bearer-token auth and a closing hook, as the guide shows them."""

import logging

from pydantic import BaseModel, ConfigDict

import crawlkeeper
from crawlkeeper import AuthMethod, hookimpl

log = logging.getLogger("crawlkeeper.plugins.bearer")


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token_env: str
    header: str = "Authorization"


async def login(session, params: Params) -> None:
    token = crawlkeeper.resolve_secret({"value_env": params.token_env}, what="bearer token_env")
    await session.headers.add({params.header: f"Bearer {token}"})


@hookimpl
def crawlkeeper_auth_methods():
    return [AuthMethod("bearer", "Send a bearer token.", Params, login)]


@hookimpl
def crawlkeeper_session_closing(session, reason):
    log.warning("bearer-trial: session %s closed (%s) temporary=%s", session.id, reason, session.temporary)
'''

MISTAKE = '''from crawlkeeper import SessionExpired, hookimpl


@hookimpl
async def crawlkeeper_session_acquire(session):
    raise SessionExpired("never raised: the coroutine would never be awaited")
'''


def install(site_packages: Path, dist: str, module: str, source: str, entry: str) -> Path:
    """A hand-made installed distribution: the module plus dist-info with one ``crawlkeeper`` entry point."""
    (site_packages / f"{module}.py").write_text(source, encoding="utf-8")
    info = site_packages / f"{dist.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(f"[crawlkeeper]\n{entry} = {module}\n", encoding="utf-8")
    (info / "RECORD").write_text("", encoding="utf-8")
    return info


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    base = tmp_path_factory.mktemp("trial-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(base / "venv")], check=True, timeout=60)
    python = base / "venv" / "bin" / "python"
    site_packages = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True, env=env(), timeout=60,
    ).stdout.strip())
    main_site = sysconfig.get_path("purelib")
    (site_packages / "zz_main.pth").write_text(f"import site; site.addsitedir({main_site!r})\n", encoding="utf-8")
    install(site_packages, "crawlkeeper-bearer-trial", "ck_bearer_trial", PLUGIN, "bearer")
    yield python, site_packages


def env(extra: dict[str, str] | None = None) -> dict[str, str]:
    out = server_env(None, "WARNING")
    for name in ("PYTHONPATH", "CRAWLKEEPER_CONFIG", "CRAWLKEEPER_DISABLE_PLUGINS", "CRAWLKEEPER_LOAD_PLUGINS"):
        out.pop(name, None)
    return {**out, "TRIAL_TOKEN": TOKEN, **(extra or {})}


@pytest.fixture(scope="module")
def echo() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A page on 127.0.0.1 that records the headers of every request."""
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append({k.lower(): v for k, v in self.headers.items()})
            text = "A page with enough visible text for the crawler to keep it. " * 3
            body = f"<html><head><title>Echo</title></head><body><p>{text}</p></body></html>".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/data", seen
    server.shutdown()
    server.server_close()


API = ('description = "API behind a bearer token"\n[security]\nallowed_domains = ["127.0.0.1"]\n'
       '[auth]\nmethod = "bearer"\ntoken_env = "TRIAL_TOKEN"\n')


def test_mistakes_are_caught_at_start_up(venv: tuple[Path, Path], tmp_path: Path) -> None:
    python, site_packages = venv
    config = write_config(tmp_path, profiles={
        "api": API, "typo": '[auth]\nmethod = "bearer"\ntokn_env = "TRIAL_TOKEN"\n',
    })

    def run(*args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(python), "-m", "crawlkeeper", *args, "--config", str(config)], capture_output=True,
                              text=True, env=env(extra), cwd=tmp_path, timeout=120)

    profiles = run("profiles")
    assert profiles.returncode == 1, profiles.stdout + profiles.stderr
    assert "ok     api" in profiles.stdout
    assert "BROKEN typo" in profiles.stdout and "profiles/typo.toml" in profiles.stdout
    assert "tokn_env: unknown key (did you mean 'token_env'?)" in profiles.stdout
    typo = run("plugins", extra={"CRAWLKEEPER_DISABLE_PLUGINS": "baerer"})
    assert typo.returncode == 2 and "did you mean 'bearer'?" in typo.stderr and "Traceback" not in typo.stderr
    info = install(site_packages, "ck-mistake", "ck_mistake_trial", MISTAKE, "mistake")
    try:
        broken = run("plugins")
    finally:
        (site_packages / "ck_mistake_trial.py").unlink()
        for f in info.iterdir():
            f.unlink()
        info.rmdir()
    assert broken.returncode == 2 and "Traceback" not in broken.stderr
    assert "plugin 'mistake'" in broken.stderr and "crawlkeeper_session_acquire" in broken.stderr
    assert "`async def` is not allowed" in broken.stderr


@pytest.mark.anyio
async def test_bearer_plugin_over_stdio_keeps_the_config_headers(
    venv: tuple[Path, Path], echo: tuple[str, list[dict[str, str]]], tmp_path: Path
) -> None:
    python, _ = venv
    url, seen = echo
    config = write_config(tmp_path, '[browser]\nextra_headers = { "X-Team" = "research" }\n', profiles={"api": API})
    params = StdioServerParameters(command=str(python), args=["-m", "crawlkeeper", "serve", "--config", str(config)],
                                   env=env(), cwd=str(tmp_path))
    shown: list[str] = []
    log = tmp_path / "server.log"
    with open(log, "w", encoding="utf-8") as errlog:  # noqa: ASYNC230 - stdio_client needs a real file
        async with stdio_client(params, errlog=errlog) as (r, w), ClientSession(r, w) as client:
            with anyio.fail_after(120):
                await client.initialize()

                async def ok(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
                    result = await client.call_tool(name, arguments)
                    shown.append(str(result.content[0].text))
                    assert not result.is_error, result.content[0].text
                    return result.structured_content or {}

                sid = (await ok("create_session", {"profile": "api"}))["session_id"]
                assert (await ok("crawl_url", {"url": url, "session_id": sid}))["title"] == "Echo"
                assert (await ok("crawl_url", {"url": url, "profile": "api"}))["title"] == "Echo"
                await ok("close_session", {"session_id": sid})
    # Two page loads (Chromium may also ask the same host for /favicon.ico, which carries them too).
    assert len([h for h in seen if h.get("accept", "").startswith("text/html")]) == 2
    for headers in seen:  # nothing lost: the config's header and the plugin's, on every request
        assert headers.get("authorization") == f"Bearer {TOKEN}"
        assert headers.get("x-team") == "research"
    text = log.read_text(encoding="utf-8")
    assert "closed (temporary) temporary=True" in text
    assert f"session {sid} closed (closed) temporary=False" in text
    assert TOKEN not in "\n".join(shown) and TOKEN not in text
