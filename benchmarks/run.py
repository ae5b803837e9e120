"""crawlkeeper benchmarks: every figure is a ratio against a baseline measured in the same run.

    ./run bench            # full run (a few minutes)
    ./run bench --quick    # small settings: rough figures in about three minutes
    ./run bench --smoke    # one sample of everything: only proves the script runs (the test suite uses this)

Sections: (1) MCP overhead: crawl_url over stdio vs direct crawl4ai arun vs raw Playwright goto+content;
(2) throughput: crawl_many vs arun_many at the same concurrency; (3) sessions: create_session vs a fresh
browser per session, and memory per idle session; (4) start-up: initialize/tools-list vs `import mcp`;
(5) the egress policy's cost: the same in-process crawl with and without the proxy; (6) the hostile-page
guards' cost: a warm session-less crawl with its context wiped and page parked after every call and its
downloads metered, against the same crawl reusing the context as is, unmetered (the behaviour before).
Prints a table (min/median/max) and writes benchmarks/results/bench.png when matplotlib is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from crawlkeeper.browser import find_browser, launch_args
from crawlkeeper.testing.site import TestSite

from common import Stats, server_params, temp_dir, tree_rss_mb, unguarded_app, write_config
from sites import ReposTestSite

RESULTS = Path(__file__).parent / "results"
Rows = list[tuple[str, Stats, Stats | None]]  # (section, figure, its baseline)


def header(title: str) -> None:
    print(f"\n{title}\n" + "-" * len(title), flush=True)


def direct_run_config():  # type: ignore[no-untyped-def]
    """The same CrawlerRunConfig crawlkeeper builds, without a session (what a crawl4ai user writes)."""
    from crawl4ai import CacheMode, CrawlerRunConfig

    return CrawlerRunConfig(cache_mode=CacheMode.BYPASS, verbose=False, wait_until="domcontentloaded",
                            page_timeout=30_000, delay_before_return_html=0.0, word_count_threshold=1)


async def direct_crawler():  # type: ignore[no-untyped-def]
    from crawlkeeper import _crawl4ai

    crawler = _crawl4ai.make_crawler(executable_path=find_browser().path, headless=True, args=launch_args([]),
                                     proxy=None)
    await crawler.start()
    return crawler


#: ``--smoke`` only proves every path runs: no warm-up call before each contender's one sample.
WARMUP = True


async def interleaved(n: int, fns: dict[str, object]) -> dict[str, Stats]:
    """Round-robin sampling so machine noise hits every contender alike (after one warm-up call each)."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values() if WARMUP else ():
        await fn()  # type: ignore[operator]
    for _ in range(n):
        for name, fn in fns.items():
            started = time.perf_counter()
            await fn()  # type: ignore[operator]
            samples[name].append(time.perf_counter() - started)
    return {name: Stats(name, s) for name, s in samples.items()}


async def bench_overhead(site: TestSite, client, pw, crawler, repeats: int) -> list[tuple[str, Stats, Stats | None]]:  # type: ignore[no-untyped-def]
    url = site.url("/")
    browser = await pw.chromium.launch(executable_path=find_browser().path, args=launch_args([]))
    context = await browser.new_context()
    config = direct_run_config()

    async def raw() -> None:
        page = await context.new_page()
        await page.goto(url, wait_until="domcontentloaded")
        await page.content()
        await page.close()

    async def direct() -> None:
        result = await crawler.arun(url, config=config)
        assert result.html

    async def mcp() -> None:
        result = await client.call_tool("crawl_url", {"url": url})
        assert not result.is_error, result.content[0].text

    stats = await interleaved(repeats, {"raw Playwright goto+content": raw, "crawl4ai arun (direct)": direct,
                                        "crawlkeeper crawl_url (MCP stdio)": mcp})
    await browser.close()
    raw_s, direct_s, mcp_s = stats.values()
    return [("floor", raw_s, None), ("crawl4ai", direct_s, raw_s), ("overhead", mcp_s, direct_s),
            ("overhead-floor", Stats(mcp_s.name + " ", mcp_s.samples), raw_s)]


async def bench_throughput(site: TestSite, client, crawler, pages: int, repeats: int) -> Rows:  # type: ignore[no-untyped-def]
    from crawl4ai.async_dispatcher import SemaphoreDispatcher

    urls = [site.url(f"/long?n=20&page={i}") for i in range(pages)]
    config = direct_run_config()

    async def direct() -> None:
        results = await crawler.arun_many(urls, config=config, dispatcher=SemaphoreDispatcher(semaphore_count=8))
        assert sum(1 for r in results if r.html) == len(urls)

    async def mcp() -> None:
        result = await client.call_tool("crawl_many", {"urls": urls, "concurrency": 8})
        assert not result.is_error
        assert all("error" not in r for r in result.structured_content["results"])

    stats = await interleaved(repeats, {f"arun_many {pages} pages, concurrency 8": direct,
                                        f"crawl_many {pages} pages, concurrency 8": mcp})
    direct_s, mcp_s = stats.values()
    return [("throughput", direct_s, None), ("throughput", mcp_s, direct_s)]


async def bench_sessions(site: TestSite, client, pw, pid: int, repeats: int, counts: list[int],  # type: ignore[no-untyped-def]
                         settle_s: float) -> tuple[list, list[str]]:
    url = site.url("/")
    ids: list[str] = []

    async def cookie_only() -> None:
        r = await client.call_tool("create_session", {"cookies": [{"name": "k", "value": "v", "url": url}]})
        assert not r.is_error, r.content[0].text
        ids.append(r.structured_content["session_id"])

    async def with_url() -> None:
        r = await client.call_tool("create_session", {"url": url})
        assert not r.is_error, r.content[0].text
        ids.append(r.structured_content["session_id"])

    async def fresh_browser() -> None:
        browser = await pw.chromium.launch(executable_path=find_browser().path, args=launch_args([]))
        context = await browser.new_context()
        page = await context.new_page()
        await page.goto(url, wait_until="domcontentloaded")
        await browser.close()

    stats = await interleaved(repeats, {"fresh browser per session (launch+goto)": fresh_browser,
                                        "create_session, cookie-only": cookie_only,
                                        "create_session, with url": with_url})
    for sid in ids:
        await client.call_tool("close_session", {"session_id": sid})
    fresh, cookie, with_u = stats.values()
    rows = [("sessions", fresh, None), ("sessions", cookie, fresh), ("sessions", with_u, fresh)]

    memory = []
    for kind, args in (("cookie-only", {"cookies": [{"name": "k", "value": "v", "url": url}]}),
                       ("with url (page open)", {"url": url})):
        await asyncio.sleep(settle_s)
        base = tree_rss_mb(pid, "uss")
        made: list[str] = []
        for count in counts:
            while len(made) < count:
                r = await client.call_tool("create_session", args)
                assert not r.is_error, r.content[0].text
                made.append(r.structured_content["session_id"])
            await asyncio.sleep(settle_s)
            uss = tree_rss_mb(pid, "uss")
            memory.append(f"  {count:3d} idle sessions, {kind:<20}: tree USS {uss:7.1f} MB, +{uss - base:7.1f} MB "
                          f"over {base:.1f} MB = {(uss - base) / count:5.1f} MB per session")
        for sid in made:
            await client.call_tool("close_session", {"session_id": sid})
    return rows, memory


async def bench_startup(config: Path, repeats: int) -> list[tuple[str, Stats, Stats | None]]:
    from mcp import Client

    floor, init, tools = [], [], []
    for _ in range(repeats):
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "import mcp")
        assert await proc.wait() == 0
        floor.append(time.perf_counter() - started)
        started = time.perf_counter()
        async with Client(server_params(config)) as client:
            init.append(time.perf_counter() - started)
            await client.list_tools()
            tools.append(time.perf_counter() - started)
    floor_s = Stats("python -c 'import mcp'", floor)
    return [("startup", floor_s, None), ("startup", Stats("serve: initialize answered", init), floor_s),
            ("startup", Stats("serve: tools/list answered", tools), floor_s)]


async def bench_egress(site: TestSite, config: Path, with_policy, repeats: int) -> Rows:  # type: ignore[no-untyped-def]
    """``with_policy``: a started app as shipped (section 6 measures the guards on the same one)."""
    import functools

    import crawlkeeper.app.gate
    from crawlkeeper.egress import EgressProxy
    from crawlkeeper.runtime import build_app

    url = site.url("/")
    without = build_app(config)
    without.backend.needs_proxy = False  # type: ignore[attr-defined]
    open_proxy = build_app(config)  # the proxy without its credentials (what they cost: Playwright's interception)
    await without.startup()
    await open_proxy.startup()
    crawlkeeper.app.gate.EgressProxy = functools.partial(EgressProxy, require_auth=False)  # type: ignore[misc]
    try:
        await open_proxy.crawl(url)  # its proxies are made now, without credentials
    finally:
        crawlkeeper.app.gate.EgressProxy = EgressProxy  # type: ignore[misc]
    try:
        stats = await interleaved(repeats, {
            "in-process crawl, no egress proxy": lambda: without.crawl(url),
            "in-process crawl, proxy without credentials": lambda: open_proxy.crawl(url),
            "in-process crawl, egress policy on": lambda: with_policy.crawl(url),
        })
    finally:
        await without.shutdown()
        await open_proxy.shutdown()
    off, no_auth, on = stats.values()
    return [("egress", off, None), ("egress", no_auth, off), ("egress", on, off), ("egress", on, no_auth)]


async def bench_guards(site: TestSite, config: Path, guarded, repeats: int) -> list[tuple[str, Stats, Stats | None]]:  # type: ignore[no-untyped-def]
    """``guarded``: a started app as shipped, against one crawling as crawlkeeper did before the guards."""
    url = site.url("/")
    before, before_crawl = await unguarded_app(config)

    async def unguarded() -> None:
        await before_crawl(url)

    try:
        stats = await interleaved(repeats, {
            "session-less crawl, context reused as is": unguarded,
            "session-less crawl, wiped + parked + metered": lambda: guarded.crawl(url),
        })
    finally:
        await before.shutdown()
    off, on = stats.values()
    return [("guards", off, None), ("guards", on, off)]


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small settings: rough figures")
    parser.add_argument("--smoke", action="store_true", help="one sample of everything: figures mean nothing")
    parser.add_argument("--no-chart", action="store_true")
    args = parser.parse_args()
    args.quick = args.quick or args.smoke
    global WARMUP
    WARMUP = not args.smoke
    repeats = 1 if args.smoke else 3 if args.quick else 15
    pages = 2 if args.smoke else 8 if args.quick else 50
    counts = [1] if args.smoke else [1, 3] if args.quick else [1, 10, 50]
    from mcp import Client
    from playwright.async_api import async_playwright

    from crawlkeeper.runtime import build_app

    folder = temp_dir()
    config = write_config(folder)
    table: list[tuple[str, Stats, Stats | None]] = []
    memory: list[str] = []
    with ReposTestSite() as site:
        print(f"crawlkeeper benchmarks ({'quick' if args.quick else 'full'}); site {site.base_url}; "
              f"browser {find_browser().path}", flush=True)
        header("4. start-up")
        table += await bench_startup(config, repeats if args.quick else 8)
        for _, s, b in table[-3:]:
            print(s.row(b), flush=True)
        # One Playwright driver and one direct crawl4ai crawler serve every section that needs them: each launch
        # costs seconds and measures nothing.
        pw = await async_playwright().start()
        crawler = await direct_crawler()
        try:
            async with Client(server_params(config)) as client:
                import psutil

                server_pid = max((p for p in psutil.Process().children(recursive=False)
                                  if "crawlkeeper" in " ".join(p.cmdline())), key=lambda p: p.create_time()).pid
                header("1. MCP overhead (warm, small local page)")
                rows = await bench_overhead(site, client, pw, crawler, repeats)
                table += rows[:3]
                for _, s, b in rows:
                    print(s.row(b), flush=True)
                header("2. throughput")
                rows = await bench_throughput(site, client, crawler, pages,
                                              max(1 if args.smoke else 2, repeats // 5))
                table += rows
                for _, s, b in rows:
                    print(s.row(b, unit="s ", scale=1.0), flush=True)
                closing, crawler = crawler, None
                await closing.close()
                header("3. sessions")
                rows, memory = await bench_sessions(site, client, pw, server_pid,
                                                    1 if args.smoke else max(3, repeats // 2), counts,
                                                    settle_s=0.2 if args.smoke else 1.0)
                table += rows
                for _, s, b in rows:
                    print(s.row(b), flush=True)
                print("\n".join(memory), flush=True)
        finally:
            if crawler is not None:
                await crawler.close()
            await pw.stop()
        shipped = build_app(config)  # as shipped: section 5's "policy on" and section 6's "guarded"
        await shipped.startup()
        try:
            header("5. egress policy cost (in-process, same warm browser each)")
            rows = await bench_egress(site, config, shipped, repeats)
            table += rows
            for _, s, b in rows:
                print(s.row(b), flush=True)
            header("6. hostile-page guards' cost (in-process, warm session-less crawl)")
            # a few-% effect: more samples
            rows = await bench_guards(site, config, shipped, repeats if args.quick else repeats * 4)
            table += rows
            for _, s, b in rows:
                print(s.row(b), flush=True)
        finally:
            await shipped.shutdown()
    RESULTS.mkdir(exist_ok=True)
    data = [{"section": sec, "name": s.name, "samples": s.samples, "baseline": b.name if b else None,
             "ratio": (s.median / b.median) if b else None} for sec, s, b in table]
    (RESULTS / "bench.json").write_text(json.dumps({"rows": data, "memory": memory}, indent=2))
    if not args.no_chart:
        chart(data)
    return 0


def chart(data: list[dict]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("\n(matplotlib not installed: no chart; `pip install crawlkeeper[bench]`)")
        return
    rows = [d for d in data if d["ratio"] is not None]
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(rows) + 1.5))
    labels = [f"{d['name']}\n÷ {d['baseline']}" for d in rows]
    ax.barh(labels, [d["ratio"] for d in rows], color="#3b7dd8")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("median ratio (lower is faster; 1.0 = baseline)")
    ax.set_xscale("log")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(RESULTS / "bench.png", dpi=110)
    print(f"\nchart: {RESULTS / 'bench.png'}")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
