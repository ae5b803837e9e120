"""`crawlkeeper login` in a headed Chromium under Xvfb: the test plays the person through the browser's
debugging connection (fills the real login form), presses Enter, and an MCP server then uses the saved session."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from crawlkeeper.testing.site import TestSite

from helpers import mcp_server, server_env, write_config

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    binary = shutil.which("Xvfb")
    if binary is None:
        pytest.fail("Xvfb is not installed (./run test installs it: apt-get install xvfb)")
    for number in range(90, 120):
        if not Path(f"/tmp/.X11-unix/X{number}").exists() and not Path(f"/tmp/.X{number}-lock").exists():
            break
    proc = subprocess.Popen([binary, f":{number}", "-screen", "0", "1280x900x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not Path(f"/tmp/.X11-unix/X{number}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f":{number}"
    finally:
        proc.terminate()
        proc.wait(5)


def wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"the login browser's debugging port {port} never opened")


def login_window_open(port: int, login_url: str) -> bool:
    """Whether the browser shows the login page: its own target list, the ground truth."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as response:
            targets = json.load(response)
    except OSError:
        return False
    return any(t.get("type") == "page" and t.get("url", "").startswith(login_url) for t in targets)


def play_the_person(port: int, login_url: str, proc: subprocess.Popen[str]) -> None:
    """Log in through the visible window, as a person would, over the debugging connection.

    The connection is made once the browser lists the login page: a Playwright client attached while the login
    command was still creating its session sometimes kept that page at about:blank for good (2 runs in 24), though
    the browser had loaded it; so a connection that does not see the page within a few seconds is made again."""
    from playwright.sync_api import sync_playwright

    deadline = time.monotonic() + 60  # the login command creates its session first: slow under load
    with sync_playwright() as pw:
        while True:
            # A browser that went away leaves its last pages listed: the command's own fate says more.
            assert proc.poll() is None, "the login command ended before the person"
            if not login_window_open(port, login_url):
                assert time.monotonic() < deadline, f"the browser never showed {login_url}"
                time.sleep(0.2)
                continue
            browser = pw.chromium.connect_over_cdp(f"http://127.0.0.1:{port}")
            seen_by = time.monotonic() + 5
            page = None
            while page is None and time.monotonic() < seen_by:
                page = next((p for c in browser.contexts for p in c.pages if p.url.startswith(login_url)), None)
                if page is None:
                    time.sleep(0.2)
            if page is not None:
                break
            urls = [p.url for c in browser.contexts for p in c.pages]
            browser.close()  # only this connection
            assert time.monotonic() < deadline, f"the debugging connection never saw {login_url}: {urls}"
        page.fill("#username", "alice")
        page.fill("#password", "wonderland")
        page.click("#submit")
        page.wait_for_url("**/private", timeout=30_000)
        assert "Welcome, alice!" in page.content()
        browser.close()  # only the debugging connection: the browser itself stays the login command's


def test_a_person_logs_in_once_and_agents_reuse_it(tmp_path: Path, test_site: TestSite, display: str) -> None:
    config = write_config(tmp_path / "login")
    port = free_port()
    env = server_env({"DISPLAY": display, "CRAWLKEEPER_LOGIN_DEBUG_PORT": str(port)}, log_level="INFO")
    login_url = test_site.url("/login")
    proc = subprocess.Popen(
        [sys.executable, "-m", "crawlkeeper", "login", "gh", login_url, "--config", str(config)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        cwd=str(config.parent), start_new_session=True,  # its browser holds the pipes too: kill them together
    )
    try:
        wait_for_port(port, 60)
        play_the_person(port, login_url, proc)
        out, err = proc.communicate("\n", timeout=60)  # the person presses Enter
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
        print(f"the login command's output:\n{out}\nand its stderr:\n{err}", file=sys.stderr)
        raise
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err
    assert "saved session 'gh'" in out and "ck_session" in out
    assert "Log in there, then press Enter" in err

    import anyio

    async def agent() -> None:
        async with mcp_server(config) as server:
            page = await server.ok("crawl_url", {"url": test_site.url("/private"), "session_id": "gh"})
            assert page["final_url"] == test_site.url("/private"), "the agent is not logged in"
            assert "Welcome, alice!" in page["content"] and page["restored"] is True

    anyio.run(agent)


def test_login_without_a_display_is_a_clear_error(tmp_path: Path) -> None:
    config = write_config(tmp_path / "nodisplay")
    env = {k: v for k, v in server_env().items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    result = subprocess.run([sys.executable, "-m", "crawlkeeper", "login", "gh", "http://127.0.0.1:1/",
                             "--config", str(config)], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 1
    assert "needs a display" in result.stderr and "sessions export" in result.stderr
    assert result.stdout == ""
