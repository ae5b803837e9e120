"""Browser fleet benchmarks (issue 18), ratios against baselines measured in the same run.

    .venv/bin/python benchmarks/fleet.py [--quick] [--pages N]

1. Warm crawl through a Playwright-server endpoint on loopback vs the same crawl on a local launched browser
   (target <= 1.2x).
2. crawl_many of N local pages (default 200) with two endpoints vs one, each endpoint's server and browser pinned
   to one CPU with taskset (target >= 1.6x throughput). crawlkeeper itself is not pinned.
3. Failover: sessions on two endpoints, one endpoint SIGKILLed; time from the kill to the first successful crawl
   of a session it held, against one restore (a crawl in a hibernated session) measured in the same run
   (target <= 2 s + one restore).

Everything runs on loopback: the test site, `playwright launch-server` processes, crawlkeeper in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from crawlkeeper.testing.site import TestSite

from browser_servers import BrowserServer, launch_server
from common import Stats, temp_dir, write_config
from sites import ReposTestSite


def make_app(folder: Path, endpoints: list[str] | None) -> Any:
    from crawlkeeper.app import App
    from crawlkeeper.config import load_config
    from crawlkeeper.plugins import create_plugin_manager

    folder.mkdir(parents=True, exist_ok=True)
    extra = "[browser]\nwarmup = \"off\"\n"
    if endpoints:
        extra += "endpoints = [" + ", ".join(f'"{u}"' for u in endpoints) + "]\n"
    extra += "[limits]\nmax_concurrent_crawls = 8\n"
    app = App(load_config(write_config(folder, extra)), create_plugin_manager())
    app.configure()
    return app


async def warm_crawl(site: TestSite, n: int) -> None:
    print("1. warm crawl: Playwright-server endpoint vs local launched browser", flush=True)
    server = launch_server()
    try:
        local, remote = make_app(temp_dir(), None), make_app(temp_dir(), [server.url])
        try:
            await local.startup()
            await remote.startup()
            url = site.url("/")
            # interleaved, so load on the machine hits both alike
            base = Stats("local launched browser", [])
            fleet = Stats("Playwright-server endpoint (loopback)", [])
            for app in (local, remote):
                await app.crawl(url)
                await app.crawl(url)
            for _ in range(n):
                for app, stats in ((local, base), (remote, fleet)):
                    started = time.perf_counter()
                    await app.crawl(url)
                    stats.samples.append(time.perf_counter() - started)
            print(base.row())
            print(fleet.row(base))
        finally:
            await local.shutdown()
            await remote.shutdown()
    finally:
        server.stop()


async def throughput(site: TestSite, pages: int) -> None:
    cpus = os.sched_getaffinity(0)
    print(f"2. crawl_many of {pages} pages: two endpoints vs one, each pinned to one CPU (CPUs here: {len(cpus)})",
          flush=True)
    first, second = sorted(cpus)[0], sorted(cpus)[-1]
    servers = [launch_server(cpu=first), launch_server(cpu=second)]
    try:
        results = {}
        for label, urls in (("one endpoint", [servers[0].url]), ("two endpoints", [s.url for s in servers])):
            app = make_app(temp_dir(), urls)
            try:
                await app.startup()
                await app.crawl_many([site.url(f"/?warm={i}") for i in range(8)], concurrency=8)
                started = time.perf_counter()
                out = await app.crawl_many([site.url(f"/?n={i}") for i in range(pages)], concurrency=8)
                seconds = time.perf_counter() - started
                failed = sum(1 for r in out if "error" in r)
                results[label] = seconds
                print(f"  {label:<16} {seconds:7.2f} s  {pages / seconds:6.1f} pages/s  failed {failed}", flush=True)
            finally:
                await app.shutdown()
        print(f"  throughput two/one: {results['one endpoint'] / results['two endpoints']:.2f}x (target >= 1.6x)")
    finally:
        for server in servers:
            server.stop()


async def failover(site: TestSite, rounds: int) -> None:
    print("3. failover: kill an endpoint, time to the first successful crawl of a session it held", flush=True)
    for round_ in range(rounds):
        servers: list[BrowserServer] = [launch_server(), launch_server()]
        app = make_app(temp_dir(), [s.url for s in servers])
        try:
            await app.startup()
            cookie = [{"name": "ck_session", "value": site.session_token("alice"), "url": site.url("/")}]
            for sid in ("a", "b"):
                await app.create_session(session_id=sid, cookies=cookie)
                await app.crawl(site.url("/private"), session_id=sid)
            listed = {s["session_id"]: s["endpoint"] for s in await app.list_sessions()}
            victim = next(sid for sid, where in listed.items() if where == servers[0].url)
            other = next(sid for sid in listed if sid != victim)
            # one restore, same run: hibernate the other session and time its next crawl
            session = app.sessions.get(other)
            await app.hibernate(session)
            began = time.perf_counter()
            await app.crawl(site.url("/private"), session_id=other)
            restore = time.perf_counter() - began
            started = time.perf_counter()
            servers[0].kill()
            result = await app.crawl(site.url("/private"), session_id=victim)
            took = time.perf_counter() - started
            assert "secret-page-for-alice" in result["content"] and result["restored"], result
            print(f"  round {round_ + 1}: failover {took:.2f} s, one restore {restore:.2f} s, "
                  f"failover - restore = {took - restore:.2f} s (target <= 2 s)", flush=True)
        finally:
            await app.shutdown()
            for server in servers:
                server.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--pages", type=int, default=200)
    args = parser.parse_args()
    n, pages, rounds = (3, 20, 1) if args.quick else (15, args.pages, 3)
    print(f"load average: {os.getloadavg()}", flush=True)
    with ReposTestSite() as site:
        await warm_crawl(site, n)
        await throughput(site, pages)
        await failover(site, rounds)


if __name__ == "__main__":
    asyncio.run(main())
