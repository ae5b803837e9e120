"""What counting decoded bytes in the egress proxy costs a normal crawl (issue 13).

    .venv/bin/python benchmarks/proxy_meter.py [--quick | --smoke]

One in-process app, one warm browser: the same warm session-less crawl with the proxy's per-context metering on
(chunked framing undone, gzip inflated in bounded pieces only to count, Accept-Encoding narrowed) and off (the
proxy pipes the body as before), calls interleaved so machine noise hits both alike. Two pages: a small page and
a 256 KB HTML page served gzipped (the most inflating a normal page asks of the proxy). Also prints, for the
record, how fast a gzip bomb and an endless stream are refused at the default max_page_mb = 20 (the site runs in
this process: the stream's writer thread competes with the proxy for the GIL, so the integration test's
figures, with the server in its own process, are the ones to quote).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from common import Stats, temp_dir, write_config
from sites import HostileSite, gzip_bomb


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples: rough figures")
    parser.add_argument("--smoke", action="store_true", help="one sample: only proves the script runs")
    args = parser.parse_args()
    repeats = 1 if args.smoke else 8 if args.quick else 30

    from crawlkeeper import guard
    from crawlkeeper.errors import PageTooLarge
    from crawlkeeper.runtime import build_app

    config = write_config(temp_dir())
    gzip_bomb(0.25), gzip_bomb(100)  # built before timing
    with HostileSite() as site:
        app = build_app(config)
        await app.startup()
        try:
            pages = {"small page": site.url("/"), "256 KB gzipped page": site.url("/gzip-bomb?mb=0.25")}
            await app.crawl(pages["small page"])  # the browser is up and the proxy exists

            def metering(on: bool) -> None:
                for proxy in app.gate._proxies.values():
                    proxy.body_limits = guard.body_limit if on else None

            print(f"load average {os.getloadavg()[0]:.1f}; {repeats} samples each, interleaved", flush=True)
            for label, url in pages.items():
                samples: dict[bool, list[float]] = {False: [], True: []}
                for on in (False, True):  # warm-up
                    metering(on)
                    await app.crawl(url)
                for _ in range(repeats):
                    for on in (False, True):
                        metering(on)
                        started = time.perf_counter()
                        await app.crawl(url)
                        samples[on].append(time.perf_counter() - started)
                off = Stats(f"{label}, proxy pipes the body", samples[False])
                on_ = Stats(f"{label}, proxy counts decoded bytes", samples[True])
                print(off.row(), flush=True)
                print(on_.row(off), flush=True)
            metering(True)
            for path in ("/gzip-bomb?mb=100", "/stream"):
                started = time.perf_counter()
                try:
                    await app.crawl(site.url(path), timeout_s=60)
                    outcome = "NOT REFUSED"
                except PageTooLarge:
                    outcome = "refused"
                print(f"  {path:<44} {outcome} after {time.perf_counter() - started:.2f} s "
                      "(max_page_mb = 20, the default)", flush=True)
        finally:
            await app.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
