"""Browser fleet benchmarks (issue 18), ratios against baselines measured in the same run.

    .venv/bin/python benchmarks/fleet.py [--quick] [--pages N] [--rounds N] [--only warm|throughput|failover ...]

1. Warm crawl through a Playwright-server endpoint on loopback vs the same crawl on a local launched browser
   (target <= 1.2x).
2. crawl_many of N local pages (default 200) with two endpoints vs one, each endpoint's server and browser pinned
   to one CPU with taskset (target >= 1.6x throughput). With 3 or more CPUs crawlkeeper (this process: the test
   site, the egress proxy, markdown, its Playwright driver) is pinned to the CPUs the endpoints do not use, so the
   second endpoint adds a browser's CPU and nothing else. With 2 CPUs that is impossible: crawlkeeper shares the
   endpoints' CPUs, and the run prints the ceiling this puts on the ratio: one endpoint's time against the two
   endpoints' CPU time spread over every CPU (the target can be met there only when the browsers' CPU per page is
   well above crawlkeeper's), and how many CPUs each run kept busy. ``--endpoint-cpu-share F`` (root: a cgroup CPU
   quota, see cpu_share.py) gives each endpoint F of its CPU instead, so crawlkeeper keeps the rest: the fair
   layout scaled down to such a machine. One and two endpoints alternate for
   ``--rounds`` rounds (default 2), because this machine's speed drifts by tens of percent over minutes; the
   figure is the median of the rounds' ratios.
3. Failover: sessions on two endpoints, one endpoint SIGKILLed; time from the kill to the first successful crawl
   of a session it held, against one restore (a crawl in a hibernated session) measured in the same run
   (target <= 2 s + one restore).

Everything runs on loopback: the test site, `playwright launch-server` processes, crawlkeeper in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from browser_cpu import Sample, breakdown, difference
from cpu_share import CpuShare
from cpu_share import available as cpu_share_available

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


def _cpu_s(proc: psutil.Process, *, tree: bool = True) -> float:
    """CPU seconds of ``proc`` (and, with ``tree``, its descendants and the children they already reaped: a
    Chromium's closed renderers)."""
    total = 0.0
    for p in [proc, *(proc.children(recursive=True) if tree else [])]:
        try:
            t = p.cpu_times()
            total += t.user + t.system + ((t.children_user + t.children_system) if tree else 0.0)
        except psutil.Error:
            pass
    return total


def _split_cpu(servers: list[BrowserServer]) -> tuple[float, float]:
    """(crawlkeeper's CPU seconds: this process, its site thread, egress proxy and Playwright driver; the browser
    servers' CPU seconds: each launch-server and its Chromium)."""
    me = psutil.Process()
    server_pids = {s.proc.pid for s in servers}
    ours = _cpu_s(me, tree=False) + sum(_cpu_s(c) for c in me.children() if c.pid not in server_pids)
    theirs = sum(_cpu_s(psutil.Process(s.proc.pid)) for s in servers if s.proc.poll() is None)
    return ours, theirs


def _driver_cpu_s(servers: list[BrowserServer]) -> float:
    """CPU seconds of this process's Playwright driver(s) (node, not the servers'), part of crawlkeeper's share."""
    server_pids = {s.proc.pid for s in servers}
    total = 0.0
    for child in psutil.Process().children():
        if child.pid in server_pids:
            continue
        try:
            if "node" in child.name():
                t = child.cpu_times()
                total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _pin_threads(cpus: set[int]) -> None:
    """Pin every thread of this process (the site server runs in one) and so what they start later."""
    for thread in psutil.Process().threads():
        try:
            os.sched_setaffinity(thread.id, cpus)
        except OSError:
            pass


async def _run_many(site: TestSite, servers: list[BrowserServer], label: str, urls: list[str], pages: int,
                    round_: int) -> tuple[float, float, float]:
    """One ``crawl_many`` of ``pages`` pages through ``urls``; prints its line, returns (seconds, crawlkeeper's
    CPU seconds, the browser servers' CPU seconds)."""
    app = make_app(temp_dir(), urls)
    try:
        await app.startup()
        await app.crawl_many([site.url(f"/?warm={i}") for i in range(8)], concurrency=8)
        ours0, theirs0 = _split_cpu(servers)
        driver0 = _driver_cpu_s(servers)
        samples0 = [Sample.of(s.proc.pid) for s in servers]
        placed0 = sum(app.backend.placements().values())
        started = time.perf_counter()
        out = await app.crawl_many([site.url(f"/?r={round_}&n={i}") for i in range(pages)], concurrency=8)
        seconds = time.perf_counter() - started
        ours1, theirs1 = _split_cpu(servers)
        driver1 = _driver_cpu_s(servers)
        by_kind, renderers = difference(samples0, [Sample.of(s.proc.pid) for s in servers])
        contexts = sum(app.backend.placements().values()) - placed0
        failed = sum(1 for r in out if "error" in r)
        ours, theirs = ours1 - ours0, theirs1 - theirs0
        print(f"  {label:<16} {seconds:7.2f} s  {pages / seconds:6.1f} pages/s  failed {failed}  CPU per page: "
              f"crawlkeeper {ours * 1000 / pages:5.1f} ms, browsers {theirs * 1000 / pages:5.1f} ms; CPUs busy "
              f"{(ours + theirs) / seconds:.2f}; browser contexts opened {contexts}", flush=True)
        print(f"    endpoints per page: {breakdown(by_kind, pages)}; renderer processes started {renderers} "
              f"({renderers / pages:.2f} per page); crawlkeeper's own Playwright driver "
              f"{(driver1 - driver0) * 1000 / pages:.0f} ms of its {ours * 1000 / pages:.0f} ms", flush=True)
        if failed:
            first_error = next(r["error"] for r in out if "error" in r)
            print(f"  (figure not valid: {failed} pages failed, e.g. {first_error[:200]})", flush=True)
        return seconds, ours, theirs
    finally:
        await app.shutdown()


async def throughput(site: TestSite, pages: int, rounds: int, share: float | None = None) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    limit = f"limited to {share:g} of a CPU (CFS quota) on its own CPU" if share else "pinned to one CPU"
    print(f"2. crawl_many of {pages} pages: two endpoints vs one, each {limit} (CPUs here: {len(cpus)}; "
          f"{rounds} rounds, one and two endpoints alternating)", flush=True)
    # The fair setup: each endpoint (its Playwright server and Chromium) on a CPU of its own, and crawlkeeper
    # (this process: markdown, the egress proxy, its Playwright driver) with the test site on the remaining ones,
    # so "two endpoints" adds a browser's CPU and nothing else. On 2 CPUs nothing remains: crawlkeeper then
    # runs unpinned and shares the endpoints' CPUs, which caps the ratio (printed below from CPU times).
    first, second = cpus[-1], cpus[-2] if len(cpus) > 1 else cpus[-1]
    rest = set(cpus) - {first, second}
    if rest:
        _pin_threads(rest)
        print(f"  endpoints on CPUs {first} and {second}; crawlkeeper and the site on CPUs {sorted(rest)}")
    elif share:
        print(f"  endpoints on CPUs {first} and {second}, each with {share:g} of it; crawlkeeper and the site "
              "unpinned, with the rest of the CPUs")
    else:
        print(f"  endpoints on CPUs {first} and {second}; crawlkeeper and the site unpinned: they share the "
              "endpoints' CPUs, which caps the ratio (the 'ceiling' below)")
    shares: list[CpuShare] = []
    servers: list[BrowserServer] = []
    try:
        for index, cpu in enumerate((first, second)):  # inside the try: a failed start leaves no cgroup behind
            if share:
                shares.append(CpuShare(f"endpoint{index + 1}", share))
            servers.append(launch_server(cpu=cpu, prefix=shares[-1].prefix if share else None))
        ratios: list[float] = []
        for round_ in range(rounds):
            one = await _run_many(site, servers, "one endpoint", [servers[0].url], pages, round_)
            two = await _run_many(site, servers, "two endpoints", [s.url for s in servers], pages, round_)
            ratios.append(one[0] / two[0])
            line = f"  round {round_ + 1}: throughput two/one {ratios[-1]:.2f}x"
            if not rest and not share:
                # One endpoint: CPU-bound on its own CPU. Two: at best every CPU busy with the two-endpoint run's
                # CPU per page (both browsers and crawlkeeper's share of the same CPUs).
                ceiling = one[0] / ((two[1] + two[2]) / len(cpus))
                line += f" (ceiling with crawlkeeper sharing the {len(cpus)} CPUs: {ceiling:.2f}x)"
            print(line, flush=True)
        print(f"  throughput two/one, median of {rounds}: {statistics.median(ratios):.2f}x "
              f"(rounds {', '.join(f'{r:.2f}' for r in ratios)}; target >= 1.6x)")
    finally:
        if rest:
            _pin_threads(set(cpus))
        for server in servers:
            server.stop()
        for cgroup in shares:
            cgroup.close()


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
    parser.add_argument("--endpoint-cpu-share", type=float, metavar="F",
                        help="throughput: limit each endpoint to F of its CPU (a cgroup CPU quota; needs root) "
                        "instead of the whole CPU, so crawlkeeper keeps the rest: the fair layout scaled down to a "
                        "machine with no CPU to spare for crawlkeeper")
    parser.add_argument("--rounds", type=int, default=2,
                        help="throughput rounds, one and two endpoints alternating (the machine's speed drifts)")
    parser.add_argument("--only", choices=["warm", "throughput", "failover"], action="append",
                        help="run only this section (repeatable)")
    args = parser.parse_args()
    n, pages, rounds = (3, 20, 1) if args.quick else (15, args.pages, 3)
    pages = args.pages if args.quick and args.pages != 200 else pages
    only = set(args.only or ["warm", "throughput", "failover"])
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.endpoint_cpu_share is not None:
        if not 0 < args.endpoint_cpu_share <= 1:
            parser.error("--endpoint-cpu-share is a fraction of one CPU, above 0 and at most 1")
        if (why := cpu_share_available()) is not None:
            parser.error(f"--endpoint-cpu-share: {why}")
    print(f"load average: {os.getloadavg()}", flush=True)
    with ReposTestSite() as site:
        if "warm" in only:
            await warm_crawl(site, n)
        if "throughput" in only:
            await throughput(site, pages, 1 if args.quick else args.rounds, args.endpoint_cpu_share)
        if "failover" in only:
            await failover(site, rounds)


if __name__ == "__main__":
    asyncio.run(main())
