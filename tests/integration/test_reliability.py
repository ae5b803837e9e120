"""Reliability through a real MCP client over stdio: browser crashes, hangs, huge pages, limits, kills, leftovers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import psutil
import pytest

from helpers import Server, browsers, descendants, import_baseline_s, mcp_server, survivors, write_config

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def browser_main(server_proc: psutil.Process) -> psutil.Process:
    """Chromium's browser process (the one without --type=) among the server's descendants."""
    for proc in browsers(descendants(server_proc)):
        try:
            if not any(arg.startswith("--type=") for arg in proc.cmdline()):
                return proc
        except psutil.Error:
            continue
    raise AssertionError("no Chromium browser process found under the server")


# One server for the three tests below (each used to start its own: a server and a browser launch each). One
# crawl slot and one queued call (the queue test needs them; the others call one at a time) and no state store
# (the crash test: with one, sessions come back, see test_durable_real.py). The crash test runs last: it kills
# the browser.
SHARED = '[plugins]\ndisable = ["statefile"]\n[limits]\nmax_concurrent_crawls = 1\nmax_queued_calls = 1\n'


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    async with mcp_server(write_config(tmp_path_factory.mktemp("reliability"), SHARED)) as srv:
        yield srv


@pytest.mark.anyio
async def test_timeouts_hangs_and_huge_pages_give_clear_errors(server: Server, test_site) -> None:
    sid = (await server.ok("create_session", {"url": test_site.url("/")}))["session_id"]
    for path in ("/slow?s=30", "/loop"):
        started = time.monotonic()
        message = await server.error("crawl_url", {"url": test_site.url(path), "timeout_s": 3,
                                                   "session_id": sid})
        elapsed = time.monotonic() - started
        assert "timed out after 3 s" in message, message
        assert elapsed < 3 + 4, f"{path}: answered after {elapsed:.1f} s"
        # The session survives a timeout (its cookies are kept) and serves the next call.
        assert (await server.ok("crawl_url", {"url": test_site.url("/"), "session_id": sid}))["status"] == 200
    started = time.monotonic()
    message = await server.error("crawl_url", {"url": test_site.url("/big?mb=30")})
    assert "too large" in message and "max_page_mb" in message
    assert time.monotonic() - started < 10
    assert (await server.ok("crawl_url", {"url": test_site.url("/")}))["status"] == 200


@pytest.mark.anyio
async def test_queue_limit_gives_busy_error(server: Server, test_site) -> None:
    await server.ok("crawl_url", {"url": test_site.url("/")})  # warm the browser
    results: list[object] = []

    async def one(i: int) -> None:
        results.append(await server.call("crawl_url", {"url": test_site.url(f"/slow?s=1.5&i={i}")}))

    async with anyio.create_task_group() as tg:
        for i in range(4):
            tg.start_soon(one, i)
    errors = [r.content[0].text for r in results if r.is_error]  # type: ignore[attr-defined]
    assert errors and all("busy" in e and "retry" in e for e in errors), errors
    assert len(errors) < 4


@pytest.mark.anyio
async def test_browser_crash_loses_sessions_clearly_and_recovers(server: Server, test_site) -> None:
    created = await server.ok("create_session", {"url": test_site.url("/")})
    sid = created["session_id"]
    other = (await server.ok("create_session", {}))["session_id"]
    browser_main(server.process).kill()
    await anyio.sleep(0.5)
    message = await server.error("crawl_url", {"url": test_site.url("/"), "session_id": sid})
    assert "browser crashed" in message and "create" in message
    message = await server.error("crawl_url", {"url": test_site.url("/"), "session_id": other})
    assert "browser crashed" in message
    # The next session-less call relaunches the browser; sessions work again. (A launch takes about 1 s; the
    # bound grows with how slow this machine is right now: 20.7 s were seen at load 40 on 2 cores.)
    bound = 20 + 5 * import_baseline_s()
    started = time.monotonic()
    page = await server.ok("crawl_url", {"url": test_site.url("/")})
    assert page["status"] == 200 and time.monotonic() - started < bound
    fresh = await server.ok("create_session", {"url": test_site.url("/")})
    assert (await server.ok("crawl_url", {"url": test_site.url("/links"),
                                          "session_id": fresh["session_id"]}))["status"] == 200
    listed = await server.ok("list_sessions")
    assert [s["session_id"] for s in listed["sessions"]] == [fresh["session_id"]]
    assert f"session {sid} closed (crashed)" in server.log()


def test_sigkill_leaves_no_browser_and_next_start_cleans_leftovers(tmp_path: Path, test_site) -> None:
    stale = Path(tempfile.gettempdir()) / "playwright_chromiumdev_profile-ckstale"
    stale.mkdir(exist_ok=True)
    (stale / "Default").mkdir(exist_ok=True)
    lock = stale / "SingletonLock"
    if lock.is_symlink() or lock.exists():
        lock.unlink()
    os.symlink("somehost-999999999", lock)  # a pid that cannot exist
    config = write_config(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "crawlkeeper", "serve", "--config", str(config)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        def send(msg: dict) -> None:
            assert proc.stdin is not None
            proc.stdin.write((json.dumps(msg) + "\n").encode())
            proc.stdin.flush()

        send({"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                         "clientInfo": {"name": "t", "version": "1"}}})
        assert proc.stdout is not None
        assert b'"id":1' in proc.stdout.readline()
        send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        send({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
              "params": {"name": "create_session", "arguments": {"url": test_site.url("/")}}})
        assert b'"session_id"' in proc.stdout.readline()
        assert not stale.exists(), "the stale profile of a dead browser was not cleaned at start"
        tree = browsers(descendants(psutil.Process(proc.pid)))
        assert tree, "no browser started"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        left = survivors(tree, timeout=5)
        assert not left, f"Chromium survived SIGKILL of the server: {[p.pid for p in left]}"
    finally:
        if proc.poll() is None:
            proc.kill()
        if stale.exists():
            import shutil

            shutil.rmtree(stale, ignore_errors=True)


@pytest.mark.timeout(600)  # about 20 s quiet; minutes on a loaded box
def test_soak_leak_check_returns_to_baseline() -> None:
    """The 1,000-crawl soak lives in benchmarks/soak.py; the suite runs its leak check small: 25 crawls with a
    session created every 3 (9 created, 6 of them closed mid-run), the same assertions as the long run."""
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--crawls", "25",
                          "--churn-every", "3", "--json"],
                         capture_output=True, text=True, timeout=580, cwd=ROOT / "benchmarks")
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["errors"] == 0
    assert report["sessions_created"] == 9 and report["sessions_closed"] == 9, report
    for key in ("contexts", "pages", "chromium_processes", "sessions"):
        assert report["end"][key] <= report["start"][key], (key, report)
    # USS is what the tree really holds; the suite's bound is looser than the benchmark's 10 % goal because a
    # short run is dominated by warm-up noise.
    assert report["end"]["uss_mb"] < report["start"]["uss_mb"] * 1.3, report
