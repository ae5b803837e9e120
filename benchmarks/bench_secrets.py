"""What binding secrets costs: scoped headers (DevTools Fetch interception per in-scope request and redirect
hop), the result scrub, and keeping session-less crawls stateless.

    .venv/bin/python benchmarks/bench_secrets.py [--quick] [--only 1,2,3]

Serves the local test site on 127.0.0.1 and crawls it in-process with one warm browser, sampling round-robin:

1. warm crawl in a session without headers (baseline), with a plain header (Chromium's context-wide headers),
   and with a scoped credential header (paused and added per in-scope request and redirect hop), on a
   page with no subresource and on a page whose image, iframe and fetch are in scope (4 intercepted requests);
2. the scrub of registered secrets from a result, as a share of the warm crawl, for a 20 kB and a 1 MB content;
3. a warm session-less crawl (pooled context) reused as is, unmetered (the behaviour before issue 13: state
   leaked between calls) against today's (page parked, cookies/storage/HTTP cache wiped, downloads metered),
   back to back and with a 0.2 s pause between calls (an agent reading the result): only the call is timed.

Every figure is a median with min/max, divided by a baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from crawlkeeper.testing.site import TestSite

from common import Stats, temp_dir, timed, unguarded_app
from sites import ReposTestSite

TOKEN = "bench-token-0123456789abcdef"


async def interleaved(n: int, fns: dict) -> dict[str, Stats]:  # type: ignore[type-arg]
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        await fn()
    for _ in range(n):
        for name, fn in fns.items():
            started = time.perf_counter()
            await fn()
            samples[name].append(time.perf_counter() - started)
    return {name: Stats(name, s) for name, s in samples.items()}


def write_config(folder: Path, site: TestSite) -> Path:
    (folder / "profiles").mkdir(parents=True, exist_ok=True)
    (folder / "profiles" / "plain.toml").write_text('[browser]\nextra_headers = { "X-Trace" = "bench" }\n')
    (folder / "profiles" / "scoped.toml").write_text(
        f'[browser]\nextra_headers = {{ Authorization = "Bearer {TOKEN}" }}\nheader_domains = ["{site.host}"]\n')
    config = folder / "crawlkeeper.toml"
    config.write_text(f'[security]\nallow_private = ["{site.host}"]\n[plugins]\ndisable = ["ttl"]\n')
    return config


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke test")
    parser.add_argument("--only", default="1,2,3", help="comma list of sections to run")
    args = parser.parse_args()
    only = {int(n) for n in args.only.split(",") if n.strip()}
    repeats = 3 if args.quick else 25
    os.environ.setdefault("CRAWLKEEPER_LOG_LEVEL", "WARNING")
    from crawlkeeper.logs import register_secret, scrub_secrets
    from crawlkeeper.runtime import build_app

    with ReposTestSite() as site:
        config = write_config(temp_dir(), site)
        if 3 in only:
            await bench_stateless(site, config, repeats * 2)
        if not only & {1, 2}:
            return 0
        app = build_app(config)
        await app.startup()
        try:
            sessions = {}
            for name, profile in (("no headers", None), ("plain header, context-wide", "plain"),
                                  ("scoped header, per-hop interception", "scoped")):
                sessions[name] = (await app.create_session(profile=profile))["session_id"]
            print(f"secrets benchmark ({'quick' if args.quick else 'full'}), site {site.base_url}", flush=True)
            table = []
            for label, url in (("small page", site.url("/")),
                               ("page with 3 in-scope subresources",
                                site.url(f"/subresources?target={site.url('/tiny')}"))):
                stats = await interleaved(repeats, {
                    f"{name} ({label})": (lambda sid=sid, url=url: app.crawl(url, session_id=sid))
                    for name, sid in sessions.items()
                })
                base, *others = stats.values()
                print(f"\n1. warm crawl in a session, {label}")
                print(base.row())
                for other in others:
                    print(other.row(base))
                table.append((label, base, others))
            # 2. the scrub: registered secrets vs a real crawl result
            for i in range(5):
                register_secret(f"{TOKEN}-{i}")
            long_url = site.url("/long?n=8000")
            big = await timed(max(3, repeats // 3), lambda: app.crawl(
                long_url, max_chars=1_000_000, session_id=sessions["no headers"]), "warm crawl of /long?n=8000")
            result = await app.crawl(long_url, max_chars=1_000_000, session_id=sessions["no headers"])
            content = result["content"]
            small = content[:20_000]
            crawl_s = table[0][1].median
            print(f"\n2. scrubbing registered secrets (6 registered); warm small-page crawl {crawl_s * 1000:.1f} ms, "
                  f"{big.name} ({len(content) / 1e6:.2f} M chars) {big.median * 1000:.1f} ms")
            for label, text, against in (("20 kB result", small, crawl_s),
                                         (f"{len(content) / 1e6:.2f} M chars result", content, big.median)):
                payload = {"url": site.url("/long"), "title": result["title"], "content": text}
                stats = await timed(repeats * 4, _async(scrub_secrets, payload), f"scrub, {label}")
                share = stats.median / against * 100
                print(f"{stats.row()}  = {share:.2f} % of its warm crawl")
        finally:
            await app.shutdown()
    return 0


async def bench_stateless(site: TestSite, config: Path, repeats: int) -> None:
    from crawlkeeper.runtime import build_app

    url = site.url("/")
    today = build_app(config)
    await today.startup()
    before, before_crawl = await unguarded_app(config)

    async def unguarded() -> None:
        await before_crawl(url)

    try:
        for pause in (0.0, 0.2):
            samples: dict[str, list[float]] = {"reused as is, unmetered (before)": [], "wiped + parked + metered": []}
            fns = dict(zip(samples, (unguarded, lambda: today.crawl(url)), strict=True))
            for fn in fns.values():
                await fn()
            for _ in range(repeats):
                for name, fn in fns.items():
                    await asyncio.sleep(pause)
                    started = time.perf_counter()
                    await fn()
                    samples[name].append(time.perf_counter() - started)
            base, other = (Stats(name, s) for name, s in samples.items())
            print(f"\n3. warm session-less crawl of a small page, {pause:g} s between calls", flush=True)
            print(base.row())
            print(other.row(base), flush=True)
    finally:
        await today.shutdown()
        await before.shutdown()


def _async(fn, arg):  # type: ignore[no-untyped-def]
    async def call() -> None:
        fn(arg)

    return call


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
