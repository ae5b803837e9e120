"""Benchmarks of the wave-2 tools, each against a baseline measured in the same run (medians, min/max).

    .venv/bin/python benchmarks/tools.py [--quick] [--pages 200] [--only screenshot|site|first]
                                         [--playwright-mcp DIR | --no-playwright-mcp]

- screenshot: crawlkeeper's screenshot (in-process App: egress check, pooled page, load, capture) vs
  Playwright's own goto + page.screenshot on a warm page of its own browser, same page, interleaved.
- crawl_site: 200 local pages at concurrency 8 vs crawl4ai's BFSDeepCrawlStrategy on the same site.
- first call: `crawlkeeper serve` over stdio, first crawl_url after initialize (plus a 1.5 s pause, an agent
  thinking) with [browser] warmup = launch vs off, and playwright-mcp's first browser_navigate on the same
  page. playwright-mcp is installed once into the repo's `.cache/playwright-mcp` (what `./run bench` does);
  --playwright-mcp DIR uses another folder where `npm install @playwright/mcp` was run.
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


async def first_call(argv: list[str], env: dict[str, str], tool: str, arguments: dict) -> tuple[float, float]:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    params = StdioServerParameters(command=argv[0], args=argv[1:], env=env)
    started = time.perf_counter()
    with open(os.devnull, "w") as devnull:  # noqa: ASYNC230 - opening /dev/null does not block
        async with stdio_client(params, errlog=devnull) as (r, w), ClientSession(r, w) as session:
            await session.initialize()
            init_s = time.perf_counter() - started
            await session.list_tools()
            await asyncio.sleep(1.5)  # the agent thinks before its first call
            started = time.perf_counter()
            result = await session.call_tool(tool, arguments)
            assert not result.is_error, result.content
            return init_s, time.perf_counter() - started


async def bench_first_call(url: str, rounds: int, playwright_mcp: Path | None) -> list[tuple[str, Stats, Stats]]:
    env = {**os.environ, "CRAWLKEEPER_LOG_LEVEL": "WARNING"}
    variants: dict[str, tuple[list[str], dict[str, str], str, dict]] = {}
    for mode in ("off", "launch"):
        config = write_config(temp_dir(), f'[browser]\nwarmup = "{mode}"\n')
        variants[f"crawlkeeper warmup={mode}"] = (
            [sys.executable, "-m", "crawlkeeper", "serve", "--config", str(config)], env, "crawl_url", {"url": url})
    if playwright_mcp is not None:
        cli = playwright_mcp / "node_modules" / "@playwright" / "mcp" / "cli.js"
        variants["playwright-mcp"] = (
            ["node", str(cli), "--headless", "--isolated", "--executable-path", str(find_browser().path),
             "--no-sandbox"], dict(os.environ), "browser_navigate", {"url": url})
    init: dict[str, list[float]] = {k: [] for k in variants}
    first: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for name, (argv, env_, tool, arguments) in variants.items():
            i, f = await first_call(argv, env_, tool, arguments)
            init[name].append(i)
            first[name].append(f)
    return [(name, Stats(f"{name}: initialize", init[name]), Stats(f"{name}: first call", first[name]))
            for name in variants]


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
    parser.add_argument("--only", choices=["screenshot", "site", "first"], default=None)
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
        if args.only in (None, "first"):
            print("first call over stdio after initialize + 1.5 s")
            peer = None if args.no_playwright_mcp else (args.playwright_mcp or ensure_playwright_mcp())
            rows = await bench_first_call(test_site.url("/links"), max(1, rounds // 2), peer)
            base_first = rows[0][2]
            for _name, init_s, first_s in rows:
                print(init_s.row(rows[0][1]))
                print(first_s.row(base_first))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
