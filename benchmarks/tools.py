"""Benchmarks of the wave-2 tools, each against a baseline measured in the same run (medians, min/max).

    .venv/bin/python benchmarks/tools.py [--quick] [--pages 200] [--only screenshot|site|many|first|memory]
                                         [--rounds N] [--waits 1.5,0.5]
                                         [--playwright-mcp DIR | --no-playwright-mcp]
                                         [--compare-with CHECKOUT] [--modes launch,off]

- screenshot: crawlkeeper's screenshot (in-process App: egress check, pooled page, load, capture) vs
  Playwright's own goto + page.screenshot on a warm page of its own browser, same page, interleaved.
- crawl_site: 200 local pages at concurrency 8 vs crawl4ai's BFSDeepCrawlStrategy on the same site.
- crawl_many: 32 local pages at concurrency 8, rounds back to back, the context pool sized by the concurrency
  used vs the former two idle contexts per entry (time, and contexts created per round).
- first call: `crawlkeeper serve` over stdio, initialize, tools/list, a pause (an agent thinking: --waits,
  1.5 s and 0.5 s), then the first crawl_url, with [browser] warmup = launch vs off, and playwright-mcp's first
  browser_navigate on the same page (the baseline of the ratios). playwright-mcp is installed once into the
  repo's `.cache/playwright-mcp` (what `./run bench` does); --playwright-mcp DIR uses another folder where
  `npm install @playwright/mcp` was run. --compare-with CHECKOUT adds that checkout's server (its own .venv,
  warmup = launch) to the same interleaved rounds: e.g. /work/main before a change, for initialize/tools/list.
- memory: each server's process tree (USS, PSS) 8 s after initialize, never called, per warm-up mode.
Loopback only. Not part of pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from crawlkeeper.browser import find_browser, launch_args

from common import Stats, temp_dir, write_config
from sites import ExtraSite, ReposTestSite, html_page


def site_page(i: int, pages: int) -> bytes:
    links = "".join(f'<a href="/p/{j}">page {j}</a> ' for j in (2 * i + 1, 2 * i + 2) if j < pages)
    return html_page(f"Page {i}", f"<h1>Page {i}</h1><p>{'Words of a small local page. ' * 20}</p>{links}")


async def bench_screenshot(url: str, rounds: int) -> list[Stats]:
    """Same page, same 1280x800 viewport, viewport only (full_page false), PNG, interleaved rounds.

    Rows: Playwright reloading the page it already shows (the strictest baseline), Playwright coming from a
    blank page (what crawlkeeper's pooled page does: it is parked on about:blank between calls, so every call
    is a fresh navigation), and crawlkeeper's screenshot (egress check, pooled page, load through the egress
    proxy, capture; the page is wiped after the call has answered)."""
    from playwright.async_api import async_playwright

    from crawlkeeper.runtime import build_app
    from crawlkeeper.screenshots import take_screenshot

    folder = temp_dir()
    app = build_app(write_config(folder, '[browser]\nwarmup = "off"\n'))
    await app.startup()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=find_browser().path, args=launch_args([]))
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        blank = await browser.new_page(viewport={"width": 1280, "height": 800})

        async def raw() -> None:
            await page.goto(url, wait_until="domcontentloaded")
            await page.screenshot(type="png")

        async def from_blank() -> None:
            await blank.goto(url, wait_until="domcontentloaded")
            await blank.screenshot(type="png")

        async def ours() -> None:
            await take_screenshot(app.target(), url)

        contenders = {"playwright goto+screenshot (same page)": raw,
                      "playwright from about:blank": from_blank, "crawlkeeper screenshot": ours}
        stats: dict[str, list[float]] = {name: [] for name in contenders}
        for fn in contenders.values():
            await fn()  # warm
        for _ in range(rounds):
            for name, fn in contenders.items():
                if fn is from_blank:
                    await blank.goto("about:blank")  # untimed: the parking crawlkeeper does after its call
                started = time.perf_counter()
                await fn()
                stats[name].append(time.perf_counter() - started)
        await browser.close()
    await app.shutdown()
    return [Stats(name, samples) for name, samples in stats.items()]


async def bench_site(start: str, pages: int, rounds: int) -> tuple[Stats, Stats]:
    from crawl4ai.deep_crawling import BFSDeepCrawlStrategy
    from run import direct_crawler, direct_run_config

    from crawlkeeper.runtime import build_app
    from crawlkeeper.site_crawl import crawl_site

    folder = temp_dir()
    app = build_app(write_config(folder, '[browser]\nwarmup = "off"\n[crawl]\nper_host_concurrency = 8\n'
                                         'max_site_pages = 1000\n[limits]\nmax_concurrent_crawls = 8\n'))
    await app.startup()
    crawler = await direct_crawler()
    config = direct_run_config().clone(deep_crawl_strategy=BFSDeepCrawlStrategy(max_depth=20, max_pages=pages),
                                       semaphore_count=8)
    counts: dict[str, int] = {}

    async def c4a() -> None:
        results = await crawler.arun(start, config=config)
        counts["crawl4ai"] = len(results)

    async def ours() -> None:
        result = await crawl_site(app, start, max_pages=pages, max_depth=20, concurrency=8, max_chars_per_page=2000)
        counts["crawlkeeper"] = len(result["pages"])

    samples: dict[str, list[float]] = {"crawl4ai": [], "crawlkeeper": []}
    for _ in range(rounds):
        for name, fn in (("crawl4ai", c4a), ("crawlkeeper", ours)):
            started = time.perf_counter()
            await fn()
            samples[name].append(pages / (time.perf_counter() - started))
    await crawler.close()
    await app.shutdown()
    print(f"  pages crawled per run: {counts}")
    return (Stats("crawl4ai BFSDeepCrawlStrategy (pages/s)", samples["crawl4ai"]),
            Stats("crawlkeeper crawl_site (pages/s)", samples["crawlkeeper"]))


async def first_call(argv: list[str], env: dict[str, str], tool: str, arguments: dict,
                     wait_s: float) -> tuple[float, float, float]:
    """(initialize, tools/list, first call) of one fresh server over stdio, the agent thinking ``wait_s``
    between tools/list and its first call."""
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    # In a scratch folder: playwright-mcp writes page snapshots and console logs into its working directory.
    params = StdioServerParameters(command=argv[0], args=argv[1:], env=env, cwd=str(temp_dir()))
    started = time.perf_counter()
    with open(os.devnull, "w") as devnull:  # noqa: ASYNC230 - opening /dev/null does not block
        async with stdio_client(params, errlog=devnull) as (r, w), ClientSession(r, w) as session:
            await session.initialize()
            init_s = time.perf_counter() - started
            started = time.perf_counter()
            await session.list_tools()
            list_s = time.perf_counter() - started
            await asyncio.sleep(wait_s)  # the agent thinks before its first call
            started = time.perf_counter()
            result = await session.call_tool(tool, arguments)
            assert not result.is_error, result.content
            return init_s, list_s, time.perf_counter() - started


Variant = tuple[list[str], dict[str, str], str, dict]  # argv, environment, tool, arguments


def first_call_variants(url: str, playwright_mcp: Path | None,
                        modes: tuple[str, ...] = ("launch", "off"),
                        compare_with: Path | None = None) -> dict[str, Variant]:
    env = {**os.environ, "CRAWLKEEPER_LOG_LEVEL": "WARNING"}
    variants: dict[str, Variant] = {}
    if playwright_mcp is not None:
        cli = playwright_mcp / "node_modules" / "@playwright" / "mcp" / "cli.js"
        variants["playwright-mcp"] = (
            ["node", str(cli), "--headless", "--isolated", "--executable-path", str(find_browser().path),
             "--no-sandbox"], dict(os.environ), "browser_navigate", {"url": url})
    for mode in modes:
        config = write_config(temp_dir(), f'[browser]\nwarmup = "{mode}"\n')
        variants[f"crawlkeeper warmup={mode}"] = (
            [sys.executable, "-m", "crawlkeeper", "serve", "--config", str(config)], env, "crawl_url", {"url": url})
    if compare_with is not None:  # another checkout (e.g. main before a change), its own .venv, same config
        config = write_config(temp_dir(), '[browser]\nwarmup = "launch"\n')
        python = compare_with / ".venv" / "bin" / "python"
        variants[f"{compare_with.name} warmup=launch"] = (
            [str(python), "-m", "crawlkeeper", "serve", "--config", str(config)], env, "crawl_url", {"url": url})
    return variants


async def bench_first_call(url: str, rounds: int, playwright_mcp: Path | None, waits: list[float],
                           compare_with: Path | None = None,
                           modes: tuple[str, ...] = ("launch", "off"),
                           ) -> dict[float, list[tuple[str, Stats, Stats, Stats]]]:
    """Per agent pause: (variant, initialize, tools/list, first call), variants and pauses interleaved."""
    variants = first_call_variants(url, playwright_mcp, modes, compare_with=compare_with)
    samples: dict[tuple[float, str], list[tuple[float, float, float]]] = {(w, k): [] for w in waits for k in variants}
    for _ in range(rounds):
        for wait_s in waits:
            for name, (argv, env_, tool, arguments) in variants.items():
                samples[(wait_s, name)].append(await first_call(argv, env_, tool, arguments, wait_s))
    out: dict[float, list[tuple[str, Stats, Stats, Stats]]] = {}
    for wait_s in waits:
        out[wait_s] = [(name, *(Stats(f"{name}: {what}", [row[i] for row in samples[(wait_s, name)]])
                                for i, what in enumerate(("initialize", "tools/list", "first call"))))
                       for name in variants]
    return out


async def bench_idle_memory(url: str, playwright_mcp: Path | None, settle_s: float) -> list[tuple[str, float, float]]:
    """Memory of each server's whole process tree (USS, PSS; MB) ``settle_s`` after initialize (warmup=launch:
    once its browser and pooled page are up), never called: what an MCP client that starts every configured
    server pays for one it never uses."""
    import psutil
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    from common import chromium_count, tree_rss_mb

    out = []
    variants = first_call_variants(url, playwright_mcp, ("launch", "import", "off"))
    for name, (argv, env, _tool, _args) in variants.items():
        params = StdioServerParameters(command=argv[0], args=argv[1:], env=env, cwd=str(temp_dir()))
        before = {p.pid for p in psutil.Process().children(recursive=True)}
        with open(os.devnull, "w") as devnull:  # noqa: ASYNC230 - opening /dev/null does not block
            async with stdio_client(params, errlog=devnull) as (r, w), ClientSession(r, w) as session:
                await session.initialize()
                await session.list_tools()
                await asyncio.sleep(settle_s)
                pid = next(p for p in psutil.Process().children() if p.pid not in before).pid
                deadline = time.monotonic() + 30
                while name.endswith("=launch") and chromium_count(pid) < 3 and time.monotonic() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.5)  # polling a process tree (a loaded machine): there is no event
                await asyncio.sleep(1 if name.endswith("=launch") else 0)
                out.append((name, tree_rss_mb(pid, "uss"), tree_rss_mb(pid, "pss")))
    return out


async def bench_many(base_url: str, pages: int, rounds: int) -> list[tuple[Stats, Stats, list[int], list[int]]]:
    """crawl_many of ``pages`` local pages at concurrency 8, rounds back to back: the pool keeping as many idle
    contexts as ran in parallel vs two idle contexts per entry (the former fixed size), in one app each, interleaved.
    Also counts the browser contexts each round created."""
    from crawlkeeper.runtime import build_app

    apps = {}
    created: dict[str, list[int]] = {}
    for name in ("two idle contexts", "sized by concurrency"):
        app = build_app(write_config(temp_dir(), '[browser]\nwarmup = "off"\n[plugins]\ndisable = ["statefile"]\n'))
        if name == "two idle contexts":
            app.pool.max_idle = 2
        await app.startup()
        real_new_context = app.backend.new_context
        created[name] = [0]

        async def counting(*args: object, _real: object = real_new_context, _name: str = name,
                           **kwargs: object) -> object:
            created[_name][-1] += 1
            return await _real(*args, **kwargs)  # type: ignore[operator]

        app.backend.new_context = counting  # type: ignore[method-assign]
        await app.crawl_many([f"{base_url}/p/{i}" for i in range(8)], concurrency=8)  # the browser is up
        apps[name] = app
    urls = [f"{base_url}/p/{i}" for i in range(pages)]
    samples: dict[str, list[float]] = {name: [] for name in apps}
    per_round: dict[str, list[int]] = {name: [] for name in apps}
    for _ in range(rounds):
        for name, app in apps.items():
            await asyncio.sleep(0.3)  # the last round's contexts are wiped
            created[name][-1] = 0
            started = time.perf_counter()
            results = await app.crawl_many(urls, concurrency=8)
            samples[name].append(time.perf_counter() - started)
            per_round[name].append(created[name][-1])
            failed = [r["error"] for r in results if "error" in r]
            if failed:
                print(f"  ({name}: {len(failed)} of {pages} pages failed, e.g. {failed[0][:100]})")
    for app in apps.values():
        await app.shutdown()
    base, ours = (Stats(f"crawl_many {pages} pages, {n}", samples[n]) for n in apps)
    return [(base, ours, per_round["two idle contexts"], per_round["sized by concurrency"])]


PLAYWRIGHT_MCP = "@playwright/mcp@0.0.83"  # the release the figures were measured with


def ensure_playwright_mcp() -> Path | None:
    """playwright-mcp in the repo's .cache/playwright-mcp, installed from npm once (None: npm missing/failed)."""
    import shutil
    import subprocess

    folder = Path(__file__).resolve().parents[1] / ".cache" / "playwright-mcp"
    if (folder / "node_modules" / "@playwright" / "mcp" / "cli.js").is_file():
        return folder
    if shutil.which("npm") is None:
        print("  (npm not found: playwright-mcp not measured)")
        return None
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["npm", "install", "--prefix", str(folder), "--no-audit", "--no-fund", "--loglevel=error",
                           PLAYWRIGHT_MCP], stdout=subprocess.DEVNULL, check=False)
    return folder if done.returncode == 0 else None


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--playwright-mcp", type=Path, default=None)
    parser.add_argument("--no-playwright-mcp", action="store_true")
    parser.add_argument("--only", choices=["screenshot", "site", "first", "memory", "many"], default=None)
    parser.add_argument("--rounds", type=int, default=None, help="rounds of the first-call section")
    parser.add_argument("--waits", default="1.5,0.5", help="agent pauses after tools/list, seconds (comma list)")
    parser.add_argument("--compare-with", type=Path, default=None,
                        help="first call: also serve from this checkout (its .venv), e.g. main before a change")
    parser.add_argument("--modes", default="launch,off", help="first call: warm-up modes of this checkout")
    args = parser.parse_args()
    rounds = 2 if args.quick else 5
    with ReposTestSite() as test_site, ExtraSite() as site:
        site.route("/p/*", lambda r: (200, {}, site_page(int(r.path.rsplit("/", 1)[1]), args.pages)))
        site.page("/robots.txt", "User-agent: *\nAllow: /\n", headers={"content-type": "text/plain"})
        if args.only in (None, "screenshot"):
            print("screenshot of a warm page (viewport, PNG)")
            base, blank, ours = await bench_screenshot(test_site.url("/links"), rounds * 2)
            print(base.row())
            print(blank.row(base))
            print(ours.row(base))
            print(ours.row(blank))
        if args.only in (None, "site"):
            print(f"crawl_site: {args.pages} local pages, concurrency 8 (higher pages/s is better)")
            base, ours = await bench_site(site.url("/p/0"), args.pages, max(1, rounds // 2))
            print(base.row(unit="p/s", scale=1.0))
            print(ours.row(base, unit="p/s", scale=1.0))
        if args.only in (None, "many"):
            print("crawl_many at concurrency 8, rounds back to back (pool of idle contexts)")
            for base, ours, base_created, ours_created in await bench_many(site.url(""), 32, rounds):
                print(base.row())
                print(ours.row(base))
                print(f"  contexts created per round: two idle {base_created}, sized by concurrency {ours_created}")
        peer = None
        if args.only in (None, "first", "memory"):
            peer = None if args.no_playwright_mcp else (args.playwright_mcp or ensure_playwright_mcp())
        if args.only in (None, "first"):
            waits = [float(w) for w in args.waits.split(",")]
            results = await bench_first_call(test_site.url("/links"), args.rounds or max(1, rounds // 2), peer, waits,
                                             args.compare_with, tuple(args.modes.split(",")))
            for wait_s, rows in results.items():
                print(f"first call over stdio: initialize, tools/list, then the agent thinks {wait_s:g} s")
                _, base_init, base_list, base_first = rows[0]
                for _name, init_s, list_s, first_s in rows:
                    print(init_s.row(None if init_s is base_init else base_init))
                    print(list_s.row(None if list_s is base_list else base_list))
                    print(first_s.row(None if first_s is base_first else base_first))
        if args.only in (None, "memory"):
            print("idle memory of a server never called, 8 s after initialize (whole process tree)")
            for name, uss, pss in await bench_idle_memory(test_site.url("/links"), peer, 8.0):
                print(f"  {name:<44} USS {uss:7.1f} MB  PSS {pss:7.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
