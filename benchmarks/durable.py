"""Durable sessions: what hibernation saves, what resuming and saving cost, and restart survival after kill -9.

    .venv/bin/python benchmarks/durable.py [--quick | --smoke]

(--smoke: two of everything, only proves the script runs; the test suite uses it.)

Every figure is a ratio against a baseline measured in the same run (this machine is noisy):
1. memory of 50 hibernated sessions (process-tree USS over the same tree with none) vs 50 active with a page;
2. resuming a hibernated session (context + saved state, before any navigation) vs creating a cookie-only one;
3. a crawl in a hibernated session vs the same crawl in a freshly created cookie-only session;
4. 100 warm crawls in one session with the store on vs off (what saving costs);
5. 20 sessions, `kill -9` of the server mid-run, a new server: usable and logged in, corrupt files, file modes.
Only loopback is ever contacted (the local test site).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import stat
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from crawlkeeper.runtime import build_app
from crawlkeeper.testing.site import TestSite

from common import Stats, temp_dir, tree_rss_mb, write_config
from sites import ReposTestSite


def header(title: str) -> None:
    print(f"\n== {title}", flush=True)


def cookie(site: TestSite, user: str = "alice") -> dict[str, Any]:
    return {"name": site.SESSION_COOKIE, "value": site.session_token(user), "url": site.url("/"), "httpOnly": True}


SETTLE_S = 1.5  # memory is read after the browser had time to free what closed contexts held


async def settle() -> None:
    await asyncio.sleep(SETTLE_S)


async def bench_memory(app: Any, site: TestSite, count: int) -> list[str]:
    pid = os.getpid()
    await app.crawl(site.url("/"))  # the browser runs before the baseline: only sessions are measured
    await settle()
    base = tree_rss_mb(pid, "uss")
    ids = [f"mem{i}" for i in range(count)]
    for sid in ids:
        await app.create_session(session_id=sid, cookies=[cookie(site)])
        await app.crawl(site.url("/private"), session_id=sid)  # a page open: what an active session holds
    await settle()
    active = tree_rss_mb(pid, "uss")
    for sid in ids:
        assert await app.hibernate(app.sessions.get(sid))
    await settle()
    hibernated = tree_rss_mb(pid, "uss")
    rows = [
        f"  {count} active sessions (page open):  +{active - base:8.1f} MB USS  (baseline)",
        f"  {count} hibernated sessions:          +{hibernated - base:8.1f} MB USS  "
        f"{(hibernated - base) / max(active - base, 0.001):6.3f}x active   (target: <= 2 MB in total)",
    ]
    for sid in ids:
        await app.close_session(sid)
    return rows


async def bench_resume(app: Any, site: TestSite, n: int) -> tuple[Stats, Stats, Stats, Stats]:
    create, resume, fresh_crawl, hib_crawl = [], [], [], []
    for i in range(n):  # round-robin: the same load for each
        started = time.perf_counter()
        await app.create_session(session_id=f"new{i}", cookies=[cookie(site)])
        create.append(time.perf_counter() - started)
        started = time.perf_counter()
        await app.crawl(site.url("/private"), session_id=f"new{i}")
        fresh_crawl.append(time.perf_counter() - started)
        assert await app.hibernate(app.sessions.get(f"new{i}"))
        started = time.perf_counter()
        await app.resume(f"new{i}")
        resume.append(time.perf_counter() - started)
        assert await app.hibernate(app.sessions.get(f"new{i}"))
        started = time.perf_counter()
        result = await app.crawl(site.url("/private"), session_id=f"new{i}")
        hib_crawl.append(time.perf_counter() - started)
        assert result["restored"] and "Welcome, alice!" in result["content"]
    for i in range(n):
        await app.close_session(f"new{i}")
    return (Stats("create_session, cookie-only", create), Stats("resume a hibernated session", resume),
            Stats("crawl, freshly created cookie-only session", fresh_crawl),
            Stats("crawl, hibernated session", hib_crawl))


async def bench_save_cost(app: Any, site: TestSite, crawls: int) -> tuple[Stats, Stats]:
    await app.create_session(session_id="warm", cookies=[cookie(site)])
    for _ in range(3):
        await app.crawl(site.url("/private"), session_id="warm")
    store = app.keeper.store
    on: list[float] = []
    off: list[float] = []
    for block in range(crawls // 10):
        order = [(True, on), (False, off)] if block % 2 == 0 else [(False, off), (True, on)]
        for enabled, samples in order:
            app.keeper.store = store if enabled else None
            for i in range(5):
                started = time.perf_counter()
                # a cookie that changes every crawl: the debounced saves always have work to do, and they run
                # in the background of the following crawls (no pause is left for them)
                await app.crawl(site.url(f"/set-cookie?name=n&value=v{block}x{i}"), session_id="warm")
                samples.append(time.perf_counter() - started)
    app.keeper.store = store
    await app.close_session("warm")
    return Stats("warm crawl, store off", off), Stats("warm crawl, store on (debounced saves)", on)


def open_log(path: Path) -> Any:
    return open(path, "w")


async def bench_restart(site: TestSite, folder: Path, sessions: int) -> list[str]:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    (folder / "restart").mkdir(parents=True, exist_ok=True)
    config = write_config(folder / "restart")
    params = StdioServerParameters(command=sys.executable, args=["-m", "crawlkeeper", "serve", "--config",
                                                                  str(config)],
                                   env={**os.environ, "CRAWLKEEPER_LOG_LEVEL": "WARNING"})
    import psutil

    before = {p.pid for p in psutil.Process().children()}
    errlog = open_log(folder / "restart.log")
    first = asyncio.get_running_loop().create_future()

    async def run_and_kill() -> None:
        async with stdio_client(params, errlog=errlog) as (r, w), ClientSession(r, w) as client:
            await client.initialize()
            for i in range(sessions):
                res = await client.call_tool("create_session", {"session_id": f"r{i}", "cookies": [cookie(site)]})
                assert not res.is_error, res.content[0].text
            server = next(p for p in psutil.Process().children() if p.pid not in before)
            crawls = [client.call_tool("crawl_url", {"url": site.url("/private"), "session_id": f"r{i}"})
                      for i in range(sessions)]
            pending = asyncio.ensure_future(asyncio.gather(*crawls, return_exceptions=True))
            await asyncio.sleep(0.5)  # mid-run: crawls in flight
            os.kill(server.pid, signal.SIGKILL)
            first.set_result(server.pid)
            await asyncio.wait({pending}, timeout=5)
            pending.cancel()

    try:
        await asyncio.wait_for(run_and_kill(), 120)
    except BaseException as exc:  # the client notices the dead server in its own way
        if not first.done():
            raise
        del exc
    state = folder / "restart" / "state"
    files = [p for p in state.iterdir() if p.suffix == ".state"]
    modes = {oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    usable = corrupt = 0
    async with stdio_client(params, errlog=errlog) as (r, w), ClientSession(r, w) as client:
        await client.initialize()
        for i in range(sessions):
            res = await client.call_tool("crawl_url", {"url": site.url("/private"), "session_id": f"r{i}"})
            text = res.content[0].text if res.content else ""
            if res.is_error:
                corrupt += "cannot be decrypted" in text or "corrupted" in text or "truncated" in text
            elif "Welcome, alice!" in (res.structured_content or {}).get("content", ""):
                usable += 1
    errlog.close()
    return [f"  {sessions} sessions, kill -9 mid-run, new server: {usable}/{sessions} usable and logged in, "
            f"{corrupt} corrupt files, {len(files)} state files with modes {sorted(modes)}"]


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small settings: figures are rough")
    parser.add_argument("--smoke", action="store_true", help="two of everything: figures mean nothing")
    args = parser.parse_args()
    global SETTLE_S
    if args.smoke:
        SETTLE_S = 0.1
    count = 2 if args.smoke else 5 if args.quick else 50
    repeats = 1 if args.smoke else 3 if args.quick else 15
    crawls = 10 if args.smoke else 20 if args.quick else 100
    restarts = 2 if args.smoke else 4 if args.quick else 20
    folder = temp_dir()
    config = write_config(folder, "")
    with ReposTestSite() as site:
        mode = 'smoke' if args.smoke else 'quick' if args.quick else 'full'
        print(f"durable sessions benchmark ({mode}); site {site.base_url}", flush=True)
        app = build_app(config)
        await app.startup()
        try:
            header("1. memory: hibernated vs active sessions")
            print("\n".join(await bench_memory(app, site, count)), flush=True)
            header("2./3. resuming a hibernated session, and a crawl in it")
            create, resume, fresh, hib = await bench_resume(app, site, repeats)
            print(create.row(), resume.row(create), f"   (target: median <= 50 ms; it is {resume.median * 1000:.1f})",
                  fresh.row(), hib.row(fresh) + "   (target: <= 1.15x)", sep="\n", flush=True)
            header("4. saving cost (warm crawls that change a cookie each time)")
            off, on = await bench_save_cost(app, site, crawls)
            print(off.row(), on.row(off) + "   (target: <= 1.05x)", sep="\n", flush=True)
            print(f"  saves written: {app.keeper.save_count}, failures: {app.keeper.save_failures}", flush=True)
        finally:
            await app.shutdown()
        header("5. restart after kill -9")
        print("\n".join(await bench_restart(site, folder, restarts)), flush=True)
    print(f"\nmedians: resume {statistics.median(resume.samples) * 1000:.1f} ms", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
