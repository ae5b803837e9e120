"""A fleet of real remote browsers on loopback: two ``playwright launch-server`` processes (Playwright's protocol)
and one Chromium with remote debugging (CDP). crawlkeeper launches no browser of its own, places sessions on
the least loaded endpoint, spreads session-less crawls, shows each session's endpoint, and `doctor` checks them.
Two crawlkeeper HTTP replicas share sessions on these endpoints through a real redis-server.

One module-scoped set of browser servers serves every test here (they are the slow part)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
import redis.asyncio as redis

from crawlkeeper.app import App
from crawlkeeper.config import load_config
from crawlkeeper.config import tomllib as config_toml  # tomllib, or tomli on Python 3.10
from crawlkeeper.endpoints import Endpoint, probe
from crawlkeeper.plugins import create_plugin_manager
from crawlkeeper.testing.site import TestSite

from browser_servers import (
    BrowserServer,
    HeaderGate,
    cdp_browser,
    launch_server,
    restart,
    run_server,
    run_server_headers,
)
from helpers import browsers, descendants, find_server, mcp_server, text_of, write_config
from http_helpers import HttpServer, add_token, error, http_client, ok

pytestmark = pytest.mark.integration

TOKEN = "fleet-token-5d1c"
GATE_TOKEN = "gate-token-8e27"
REDIS_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "crawlkeeper-redis-store"


@pytest.fixture(scope="module")
def fleet() -> Iterator[list[BrowserServer]]:
    servers = [launch_server(), launch_server(), cdp_browser()]
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


def endpoints_toml(servers: list[BrowserServer], extra: str = "") -> str:
    # A token in the first URL: the Playwright server ignores the query, crawlkeeper must mask it everywhere.
    urls = [f"{servers[0].url}?token={TOKEN}", *(s.url for s in servers[1:])]
    return "[browser]\nendpoints = [" + ", ".join(f'"{u}"' for u in urls) + "]\n" + extra


def last_renderer(server: BrowserServer) -> int:
    """The highest ``--renderer-client-id`` among the server's live renderers: Chromium numbers every renderer
    process it starts, so the difference between two readings counts the renderers started in between."""
    highest = 0
    for proc in descendants(psutil.Process(server.proc.pid)):
        try:
            args = proc.cmdline()
        except psutil.Error:
            continue
        for arg in args:
            if arg.startswith("--renderer-client-id="):
                highest = max(highest, int(arg.split("=", 1)[1]))
    return highest


def login_cookie(site: TestSite, user: str) -> list[dict[str, str]]:
    return [{"name": "ck_session", "value": site.session_token(user), "url": site.url("/")}]


@pytest.mark.anyio
async def test_sessions_are_placed_across_endpoints_and_listed_with_them(
    tmp_path: Path, test_site: TestSite, fleet: list[BrowserServer]
) -> None:
    config = write_config(tmp_path, endpoints_toml(fleet, "warmup = \"off\"\n"))
    async with mcp_server(config, log_level="INFO") as server:
        users = {"s1": "alice", "s2": "bob", "s3": "alice"}
        for sid, user in users.items():
            await server.ok("create_session", {"session_id": sid, "cookies": login_cookie(test_site, user)})
        for sid, user in users.items():
            page = await server.ok("crawl_url", {"session_id": sid, "url": test_site.url("/private")})
            assert f"secret-page-for-{user}" in page["content"]
        listed = {s["session_id"]: s["endpoint"] for s in (await server.ok("list_sessions"))["sessions"]}
        # fewest active first: one session on each endpoint, the CDP one included
        masked = f"{fleet[0].url}?token=***"
        assert sorted(listed.values()) == sorted([masked, fleet[1].url, fleet[2].url]), listed
        many = await server.ok("crawl_many", {"urls": [test_site.url(f"/?n={i}") for i in range(6)], "concurrency": 3})
        assert all("error" not in r for r in many["results"]), many
        # no local browser: nothing Chromium runs under crawlkeeper's own process
        assert browsers(descendants(find_server(config))) == []
    log = (tmp_path / "server.log").read_text()
    assert TOKEN not in log and TOKEN not in str(listed)


@pytest.mark.anyio
async def test_session_less_crawls_spread_over_endpoints(tmp_path: Path, test_site: TestSite,
                                                         fleet: list[BrowserServer]) -> None:
    write_config(tmp_path, endpoints_toml(fleet[:2]))
    app = App(load_config(tmp_path / "crawlkeeper.toml"), create_plugin_manager())
    app.configure()
    try:
        await app.startup()
        result = await app.crawl_many([test_site.url(f"/?s={i}") for i in range(8)], concurrency=4)
        assert all("error" not in r for r in result), result
        # 4 at a time: each concurrent crawl has its own context, placed on the less loaded endpoint
        spread = app.backend.placements()  # type: ignore[attr-defined]
        assert all(n >= 2 for n in spread.values()), spread
        # Again, in the pooled contexts: with crawlkeeper's launch flags, contexts taking turns no longer start
        # (and throw away) a spare renderer at each navigation (the crawl's and the parking's: ~16 here).
        before = [last_renderer(s) for s in fleet[:2]]
        result = await app.crawl_many([test_site.url(f"/?t={i}") for i in range(8)], concurrency=4)
        assert all("error" not in r for r in result), result
        started = sum(last_renderer(s) - b for s, b in zip(fleet[:2], before, strict=True))
        assert started <= 2, f"{started} renderer processes started for 8 pages in reused contexts"
    finally:
        await app.shutdown()


def test_doctor_checks_every_endpoint(tmp_path: Path, fleet: list[BrowserServer]) -> None:
    dead = "ws://127.0.0.1:9/pw"  # the discard port: nothing listens
    toml = endpoints_toml(fleet).replace("endpoints = [", f'endpoints = ["{dead}", ', 1)
    config = write_config(tmp_path, toml)
    done = subprocess.run([sys.executable, "-m", "crawlkeeper", "doctor", "--config", str(config)],
                          capture_output=True, text=True, timeout=90, cwd=tmp_path)
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert f"[FAIL] endpoint {dead} (Playwright)" in out
    assert f"[ok  ] endpoint {fleet[0].url}?token=*** (Playwright): Chromium 1" in out
    assert f"[ok  ] endpoint {fleet[2].url} (CDP): Chromium 1" in out
    assert "round trip" in out and TOKEN not in out + done.stderr
    assert psutil.pid_exists(fleet[0].proc.pid)  # probing disconnects; the servers live on


@pytest.mark.anyio
async def test_endpoints_that_need_headers_run_server_launch_options_and_a_cdp_gate(
    tmp_path: Path, test_site: TestSite, fleet: list[BrowserServer]
) -> None:
    """`playwright run-server` launches the browser its client describes in the `x-playwright-launch-options`
    header; a CDP browser behind a gate answers 401 without its `Authorization` header. Configured as tables
    with `headers`, both serve logged-in sessions; without their headers neither works."""
    server = run_server()
    gate = HeaderGate(fleet[2].url, "Authorization", f"Bearer {GATE_TOKEN}")
    try:
        launch = json.dumps(run_server_headers()["x-playwright-launch-options"])  # a TOML basic string too
        write_config(tmp_path, '[browser]\nwarmup = "off"\nendpoints = [\n'
                     f'  {{ url = "{server.url}", headers = {{ "x-playwright-launch-options" = {launch} }} }},\n'
                     f'  {{ url = "{gate.url}", headers = {{ Authorization = "Bearer {GATE_TOKEN}" }} }},\n]\n')
        app = App(load_config(tmp_path / "crawlkeeper.toml"), create_plugin_manager())
        app.configure()
        users = {"r": "alice", "c": "bob"}
        try:
            await app.startup()
            for sid, user in users.items():
                await app.create_session(session_id=sid, cookies=login_cookie(test_site, user))
            where = {s.id: app.backend.endpoint_of(s.context) for s in app.sessions.all()}  # type: ignore[attr-defined]
            assert sorted(where.values()) == sorted([server.url, gate.url]), where
            for sid, user in users.items():
                page = await app.crawl(test_site.url("/private"), session_id=sid)
                assert f"secret-page-for-{user}" in page["content"], (sid, page)
        finally:
            await app.shutdown()
        assert gate.admitted >= 2 and gate.refused == 0
        bare_gate = await probe(Endpoint.parse(gate.url))
        assert not bare_gate.ok and "401" in bare_gate.error and gate.refused >= 1, bare_gate
        # run-server without launch options launches Playwright's own browser build, which is not installed here
        assert not (await probe(Endpoint.parse(server.url), timeout_s=20)).ok
    finally:
        gate.close()
        server.stop()


def redisstore_installed(folder: Path) -> dict[str, str]:
    """The environment of a process that has the Redis store example installed: its source on PYTHONPATH and the
    distribution metadata pip would write (its entry point read from the example's pyproject.toml), so
    crawlkeeper finds ``redisstore`` through the ``crawlkeeper`` entry-point group like any installed plugin.
    (A real ``pip install`` of an example is tested in test_example_plugin.py; here it would cost seconds.)"""
    project = config_toml.loads((REDIS_EXAMPLE / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    dist = folder / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n",
                                   encoding="utf-8")
    points = "".join(f"{k} = {v}\n" for k, v in project["entry-points"]["crawlkeeper"].items())
    (dist / "entry_points.txt").write_text(f"[crawlkeeper]\n{points}", encoding="utf-8")
    return {"PYTHONPATH": os.pathsep.join([str(folder), str(REDIS_EXAMPLE / "src")])}


async def crawl_when_free(session: Any, arguments: dict[str, Any], wait_s: float) -> dict[str, Any]:
    """``crawl_url``, retried while the session is "in use by another crawlkeeper process" (its old holder's
    lease has not expired yet), as a client behind a balancer would."""
    deadline = time.monotonic() + wait_s
    while True:
        with anyio.fail_after(60):
            result = await session.call_tool("crawl_url", arguments)
        if not result.is_error:
            assert result.structured_content is not None
            return result.structured_content
        message = text_of(result)
        assert "in use by another crawlkeeper process" in message, message
        assert time.monotonic() < deadline, f"still refused after {wait_s} s: {message}"
        await anyio.sleep(0.2)


@pytest.mark.anyio
async def test_two_replicas_share_sessions_through_redis(
    tmp_path: Path, test_site: TestSite, fleet: list[BrowserServer], redis_url: str
) -> None:
    """Two `crawlkeeper serve --transport http` replicas on one config (one tokens file, one state key, one Redis,
    the module's three browser endpoints). Replica 1 creates logged-in sessions on every endpoint; replica 2 is
    refused them while replica 1 lives; a browser server dies and replica 1's sessions keep working; replica 1 is
    SIGKILLed and replica 2 serves its sessions once their leases expire. No save is ever refused by a lease."""
    lease_s = 3  # short, so the takeover takes seconds; long enough that a loaded machine renews in time
    toml = endpoints_toml(fleet) + (  # warmup on: replica 2 is connected by the time it takes over
        f'[sessions]\nsave_delay_s = 0.2\n[plugins]\ndisable = ["statefile"]\n'
        f'[plugins.redisstore]\nurl = "{redis_url}"\nprefix = "replicas:"\nlease_s = {lease_s}\n')
    env = {**redisstore_installed(tmp_path / "site-packages"), "CRAWLKEEPER_STATE_KEY": "replicas-test-key-61f0",
           "CRAWLKEEPER_LOG_LEVEL": "INFO"}
    first = HttpServer(tmp_path, toml, env=env, log_name="replica1.log")
    second = HttpServer(tmp_path, toml, env=env, log_name="replica2.log")
    token = add_token(first.config, "alice")
    users = {"s0": "alice", "s1": "bob", "s2": "alice"}
    pages = {sid: {"session_id": sid, "url": test_site.url("/private")} for sid in users}
    redis_client = redis.from_url(redis_url)
    try:
        async with anyio.create_task_group() as tg:  # the replicas start in parallel (imports dominate)
            tg.start_soon(anyio.to_thread.run_sync, first.start)
            tg.start_soon(anyio.to_thread.run_sync, second.start)
        async with http_client(first.url, token) as one, http_client(second.url, token) as two:
            for sid, user in users.items():
                await ok(one, "create_session", {"session_id": sid, "cookies": login_cookie(test_site, user)})
            placed = {s["session_id"]: s["endpoint"] for s in (await ok(one, "list_sessions"))["sessions"]}
            assert len(set(placed.values())) == 3, placed  # one on each endpoint
            # A live replica holds its sessions: the other one says so rather than driving them too.
            refused = await error(two, "crawl_url", pages["s0"])
            assert "in use by another crawlkeeper process" in refused, refused
            # A browser server dies mid-run: every session keeps working, logged in, on replica 1.
            dead = next(sid for sid, where in placed.items() if where == f"{fleet[0].url}?token=***")
            fleet[0].kill()
            for sid, user in users.items():
                page = await ok(one, "crawl_url", pages[sid])
                assert f"secret-page-for-{user}" in page["content"], (sid, page)
                assert page["restored"] is (sid == dead), (sid, page)
            await anyio.sleep(0.5)  # the restored session's delayed save (save_delay_s) lands in Redis
            # Replica 1 dies (SIGKILL: no release, no goodbye); replica 2 takes over after the leases expire.
            first.close()
            for sid, user in users.items():
                page = await crawl_when_free(two, pages[sid], wait_s=lease_s + 10)
                assert f"secret-page-for-{user}" in page["content"], (sid, page)
                assert page["restored"] is True, (sid, page)
            listed = {s["session_id"]: s["state"] for s in (await ok(two, "list_sessions"))["sessions"]}
            assert listed == {sid: "active" for sid in users}, listed
        assert int(await redis_client.get("replicas:stats:lease_violations") or 0) == 0
    finally:
        first.close()
        second.close()
        await redis_client.aclose()
        if fleet[0].proc.poll() is not None:
            fleet[0] = restart(fleet[0])
    logs = first.log() + second.log()
    assert "Traceback" not in logs and TOKEN not in logs and token not in logs, logs[-4000:]


@pytest.mark.anyio
async def test_an_endpoint_dies_its_sessions_are_restored_elsewhere_and_it_rejoins(
    tmp_path: Path, test_site: TestSite, fleet: list[BrowserServer]
) -> None:
    """Last in this module: it kills the first Playwright server (and starts it again)."""
    config = write_config(tmp_path, endpoints_toml(fleet[:2], 'warmup = "off"\n'))
    users = {"a1": "alice", "b1": "bob", "a2": "alice", "b2": "bob"}
    masked = f"{fleet[0].url}?token=***"
    async with mcp_server(config, log_level="INFO") as server:
        for sid, user in users.items():
            await server.ok("create_session", {"session_id": sid, "cookies": login_cookie(test_site, user)})
        placed = {s["session_id"]: s["endpoint"] for s in (await server.ok("list_sessions"))["sessions"]}
        on_dead = sorted(sid for sid, where in placed.items() if where == masked)
        assert len(on_dead) == 2, placed
        fleet[0].kill()
        for sid, user in users.items():
            page = await server.ok("crawl_url", {"session_id": sid, "url": test_site.url("/private")})
            assert f"secret-page-for-{user}" in page["content"], (sid, page)
            assert page["restored"] is (sid in on_dead), (sid, page)
            if sid in on_dead:
                assert "went down" in page["note"] and "crashed" not in page["note"] and TOKEN not in page["note"]
        listed = {s["session_id"]: s["endpoint"] for s in (await server.ok("list_sessions"))["sessions"]}
        assert set(listed.values()) == {fleet[1].url}, listed
        assert (await server.ok("crawl_url", {"url": test_site.url("/")}))["status"] == 200
        # the endpoint comes back: probed with back-off, it takes new sessions again
        fleet[0] = restart(fleet[0])
        rejoined = None
        for n in range(30):
            await server.ok("create_session", {"session_id": f"n{n}"})
            where = {s["session_id"]: s["endpoint"] for s in (await server.ok("list_sessions"))["sessions"]}
            if where[f"n{n}"] == masked:
                rejoined = n
                break
            await anyio.sleep(0.5)
        assert rejoined is not None, "the restarted endpoint never took a session again"
        # every endpoint down: a clear error naming them, fast
        fleet[0].kill()
        fleet[1].kill()
        started = time.monotonic()
        message = await server.error("crawl_url", {"url": test_site.url("/")})
        assert time.monotonic() - started < 10
        assert fleet[0].url in message and fleet[1].url in message and TOKEN not in message, (
            message, (tmp_path / "server.log").read_text()[-4000:])
        fleet[0], fleet[1] = restart(fleet[0]), restart(fleet[1])
    log = (tmp_path / "server.log").read_text()
    assert TOKEN not in log
