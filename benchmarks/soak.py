"""Soak: many crawls with session churn against the local site; does memory or process count creep?

    .venv/bin/python benchmarks/soak.py                            # 1,000 crawls, a new session every 10
    .venv/bin/python benchmarks/soak.py --crawls 25 --churn-every 3  # the leak check the test suite runs

Runs the real app in-process (real Chromium, egress proxy on), and reports the RSS of the whole process tree
(this Python process plus the browser), open browser contexts and pages, and Chromium processes at the start
(after a warm-up) and the end. Goal: RSS growth under 10 %, counts back to baseline. ``--json`` prints one
JSON object for machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time

from crawlkeeper.runtime import build_app

from common import chromium_count, temp_dir, tree_rss_mb, write_config
from sites import ReposTestSite


def snapshot(app) -> dict[str, float]:  # type: ignore[no-untyped-def]
    browser = app.backend._browser
    contexts = browser.contexts if browser is not None else []
    return {
        "rss_mb": round(tree_rss_mb(os.getpid()), 1),
        "uss_mb": round(tree_rss_mb(os.getpid(), "uss"), 1),
        "contexts": len(contexts),
        "pages": sum(len(c.pages) for c in contexts),
        "chromium_processes": chromium_count(os.getpid()),
        "sessions": len(app.sessions),
    }


async def soak(crawls: int, churn_every: int = 10, seed: int = 7) -> dict[str, object]:
    rng = random.Random(seed)
    config = write_config(temp_dir())
    with ReposTestSite() as site:
        app = build_app(config)
        await app.startup()
        try:
            paths = ["/", "/links", "/long?n=50", "/cookies", "/js?delay_ms=50", "/status/404"]
            for path in paths:  # warm-up: browser, pooled context, proxy
                await app.crawl(site.url(path))
            await asyncio.sleep(0.5)
            start = snapshot(app)
            started = time.perf_counter()
            live: list[str] = []
            errors = created_n = closed_n = 0
            for i in range(crawls):
                if i % churn_every == 0:  # churn: a new session every few crawls, at most 3 alive
                    created = await app.create_session(cookies=[{"name": "soak", "value": f"v{i}",
                                                                 "url": site.base_url}])
                    live.append(created["session_id"])
                    created_n += 1
                    if len(live) > 3:
                        await app.close_session(live.pop(0))
                        closed_n += 1
                session = rng.choice([None, *live])
                try:
                    await app.crawl(site.url(rng.choice(paths)), session_id=session)
                except Exception:
                    errors += 1
            for sid in live:
                await app.close_session(sid)
                closed_n += 1
            elapsed = time.perf_counter() - started
            # Closed pages' renderers take a moment to exit: let counts settle (up to 5 s) before reading them.
            for _ in range(20):
                await asyncio.sleep(0.25)
                end = snapshot(app)
                if end["chromium_processes"] <= start["chromium_processes"] and end["pages"] <= start["pages"]:
                    break
        finally:
            await app.shutdown()
    growth = (end["rss_mb"] - start["rss_mb"]) / start["rss_mb"] * 100
    return {"crawls": crawls, "churn_every": churn_every, "errors": errors, "sessions_created": created_n,
            "sessions_closed": closed_n, "seconds": round(elapsed, 1), "start": start, "end": end,
            "rss_growth_pct": round(growth, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description="crawlkeeper soak")
    parser.add_argument("--crawls", type=int, default=1000)
    parser.add_argument("--churn-every", type=int, default=10, metavar="N",
                        help="create a session every N crawls (at most 3 alive: the oldest is closed)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.crawls < 1 or args.churn_every < 1:
        parser.error("--crawls and --churn-every must be at least 1")
    report = asyncio.run(soak(args.crawls, args.churn_every))
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{report['crawls']} crawls (a new session every {report['churn_every']}) in {report['seconds']} s, "
          f"{report['errors']} errors")
    for key in ("rss_mb", "uss_mb", "contexts", "pages", "chromium_processes", "sessions"):
        print(f"  {key:<20} start {report['start'][key]:>8}   end {report['end'][key]:>8}")
    print(f"  RSS growth {report['rss_growth_pct']} % (goal < 10 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
