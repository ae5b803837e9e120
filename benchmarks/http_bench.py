"""The HTTP transport's costs, each a ratio against a baseline measured in the same run.

    .venv/bin/python benchmarks/http_bench.py                   # everything, full sizes
    .venv/bin/python benchmarks/http_bench.py --only clients     # issue 16's load run: 20 clients x 25 crawls
    .venv/bin/python benchmarks/http_bench.py --only clients --quick   # the same run small: 6 clients x 4 crawls
    .venv/bin/python benchmarks/http_bench.py --only clients --endpoints 2   # the browsers as 2 local endpoints

(1) overhead: a warm crawl_url over Streamable HTTP (bearer token, Gate, access log) vs the same over stdio,
interleaved; the issue's bound is 1.15x.

(2) many clients, issue 16's run: N clients (default 20) with distinct tokens, all at once, each creating a
session with its own cookie and doing M crawls (default 25) of the local site one after the other, then listing
and closing its session. Every client names its session "s0": a server that mixed principals up would mix
their sessions. Reported: errors (a failed call, or a client that saw another's cookie or session, both counted
per client, with the real exception unwrapped from the SDK transport's exception group) and the p95 latency
of a crawl against "the single-client median at the same global concurrency limit" (bound 3x).

That baseline is one client, one token, doing the same work alone: N sessions at once, M crawls each, under the
same global limit (``[limits] max_concurrent_crawls`` = 8, which that client may fill alone). So both phases
offer the server the same load (N crawls in flight, 8 running, the rest queued) and the ratio isolates what
many clients add: N HTTP connections and token checks, per-client bookkeeping, round-robin hand-out of slots.
It is measured before and after the N clients (A-B-A) and pooled, so a machine that slows down during the run
does not bias the ratio. The queue limits are raised to hold every call in flight: a "busy" answer is an
error here. A baseline of one client crawling one at a time would instead measure how N-fold load queues on
the machine (about N/8 crawls' time per crawl at best), not the server; p95/p95 is printed too.

With ``--endpoints N``, the server launches no browser of its own: N ``playwright launch-server`` processes on
this machine are its ``[browser] endpoints`` (the CPU governor then keeps this machine's CPUs plus N crawl slots
at the least, where it keeps the CPUs alone with a local browser).

(3) fairness: a light client's crawl latency while another client's crawl_many of many URLs runs, vs the light
client alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import traceback
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
from mcp import ClientSession
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from crawlkeeper.testing.site import TestSite

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from browser_servers import BrowserServer, launch_server
from common import Stats, server_params, temp_dir, write_config
from sites import ReposTestSite


def header(title: str) -> None:
    print(f"\n== {title}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def add_token(config: Path, name: str) -> str:
    out = subprocess.run([sys.executable, "-m", "crawlkeeper", "token", "add", name, "--config", str(config)],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


class HttpServer:
    def __init__(self, config: Path) -> None:
        self.config, self.port = config, free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "crawlkeeper", "serve", "--transport", "http", "--port", str(self.port),
             "--config", str(config)],
            stdout=subprocess.DEVNULL, stderr=open(config.parent / "http.log", "w"),  # noqa: SIM115
            env={**os.environ, "CRAWLKEEPER_LOG_LEVEL": "WARNING"}, start_new_session=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx2.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return
            except httpx2.HTTPError:
                time.sleep(0.1)
        raise SystemExit("the HTTP server did not start")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)


@asynccontextmanager
async def http_session(url: str, token: str):  # type: ignore[no-untyped-def]
    async with (create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}) as http,
                streamable_http_client(url, http_client=http) as streams,
                ClientSession(streams[0], streams[1]) as session):
        await session.initialize()
        yield session


async def call(session: ClientSession, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await session.call_tool(name, arguments)
    if result.is_error:
        raise RuntimeError(f"{name} failed: {result.content[0].text if result.content else ''}")
    return result.structured_content or {}


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[int(0.95 * (len(ordered) - 1))]


async def bench_overhead(site: TestSite, config: Path, server: HttpServer, token: str, repeats: int) -> None:
    header("(1) warm crawl_url: Streamable HTTP vs stdio (interleaved)")
    args = {"url": site.url("/tiny"), "output": "text"}
    async with stdio_client(server_params(config)) as (r, w), ClientSession(r, w) as stdio:
        await stdio.initialize()
        async with http_session(server.url, token) as http:
            for client in (stdio, http):
                for _ in range(3):
                    await call(client, "crawl_url", args)
            samples: dict[str, list[float]] = {"stdio": [], "http": []}
            pair = (("stdio", stdio), ("http", http))
            for i in range(repeats):
                # Alternate which goes first: a burst of load from elsewhere then hits both sides alike.
                for name, client in (pair if i % 2 == 0 else pair[::-1]):
                    started = time.perf_counter()
                    await call(client, "crawl_url", args)
                    samples[name].append(time.perf_counter() - started)
    base = Stats("crawl_url over stdio", samples["stdio"])
    print(base.row())
    print(Stats("crawl_url over HTTP (bearer token)", samples["http"]).row(base))
    pairs = sorted(h / s for h, s in zip(samples["http"], samples["stdio"], strict=True))
    print(f"  ratio HTTP/stdio (median): {statistics.median(samples['http']) / base.median:.2f}  (bound 1.15); "
          f"median of the {repeats} paired ratios {statistics.median(pairs):.2f}")


def leaves(exc: BaseException) -> list[BaseException]:
    """The real exceptions inside (nested) exception groups: the SDK's transport runs the session in a task
    group, so whatever a call raises arrives wrapped as "unhandled errors in a TaskGroup"."""
    inner = getattr(exc, "exceptions", None)  # BaseExceptionGroup (3.11+) or the exceptiongroup backport
    if isinstance(inner, tuple | list):
        return [leaf for sub in inner for leaf in leaves(sub)]
    return [exc]


async def one_client(server: HttpServer, token: str, index: int, site: TestSite, crawls: int,
                     latencies: list[float], problems: list[str], sessions: int = 1,
                     failed: set[int] | None = None) -> None:
    """A client with its own token: ``sessions`` sessions with their own cookie, each doing ``crawls`` crawls
    (the sessions at once), checking it only ever sees its own cookie and lists only its own sessions."""
    async def crawl_in(client: ClientSession, sid: str) -> None:
        for _ in range(crawls):
            started = time.perf_counter()
            page = await call(client, "crawl_url", {"url": site.url("/cookies"), "session_id": sid,
                                                    "output": "text"})
            latencies.append(time.perf_counter() - started)
            text = page["content"]
            if f"mine{index}{sid}" not in text or text.count("mine") != 1:
                problems.append(f"client {index} session {sid} saw: {text[:120]!r}")

    ids = [f"s{n}" for n in range(sessions)]
    try:
        async with http_session(server.url, token) as client:
            try:
                for sid in ids:
                    cookie = {"name": f"mine{index}{sid}", "value": f"v{index}", "url": site.url("/")}
                    await call(client, "create_session", {"session_id": sid, "cookies": [cookie]})
                await asyncio.gather(*(crawl_in(client, sid) for sid in ids))
                listed = (await call(client, "list_sessions", {}))["sessions"]
                if sorted(s["session_id"] for s in listed) != sorted(ids):
                    problems.append(f"client {index} listed {listed}")
            finally:  # also after a failure: the next phase creates the same ids
                for sid in ids:
                    with contextlib.suppress(Exception):
                        await client.call_tool("close_session", {"session_id": sid})
    except Exception as exc:  # counted, not fatal: the figure is the error count
        real = leaves(exc)
        problems.append(f"client {index}: " + "; ".join(f"{type(e).__name__}: {e}" for e in real))
        if failed is not None:
            if not failed:  # the first failure in full, on stderr
                traceback.print_exception(real[0], file=sys.stderr)
            failed.add(index)


async def bench_clients(site: TestSite, server: HttpServer, tokens: list[str], crawls: int,
                        global_limit: int) -> None:
    """The issue's load run: ``len(tokens)`` clients with distinct tokens at once, each creating a session and
    doing ``crawls`` crawls of the local site one after the other; the baseline is one client doing the same
    work alone at the same global limit (see the module docstring), measured before and after (A-B-A)."""
    n = len(tokens)
    header(f"(2) {n} clients with distinct tokens, a session and {crawls} crawls each, all at once "
           f"(global limit {global_limit})")
    problems: list[str] = []
    base_problems: list[str] = []
    await one_client(server, tokens[0], 0, site, 2, [], base_problems, sessions=global_limit)  # warm-up
    base_a: list[float] = []
    await one_client(server, tokens[0], 0, site, crawls, base_a, base_problems, sessions=n)
    latencies: list[float] = []
    failed: set[int] = set()
    started = time.perf_counter()
    await asyncio.gather(*(one_client(server, t, i, site, crawls, latencies, problems, failed=failed)
                           for i, t in enumerate(tokens)))
    wall = time.perf_counter() - started
    base_b: list[float] = []
    await one_client(server, tokens[0], 0, site, crawls, base_b, base_problems, sessions=n)
    base = Stats(f"one client, {n} sessions at once (before + after)", base_a + base_b)
    for name, samples in (("before", base_a), ("after", base_b)):
        if samples:
            print(Stats(f"one client, {n} sessions at once ({name})", samples).row())
    if latencies:
        print(Stats(f"{n} clients, a session each, at once", latencies).row(base if base.samples else None))
    print(f"  {n} clients: {len(latencies)} of {n * crawls} crawls answered; errors and isolation problems: "
          f"{len(problems)}; failed clients: {len(failed)}" + (f" (first: {problems[0]})" if problems else ""))
    if base_problems:
        print(f"  the single-client baseline had {len(base_problems)} problems (first: {base_problems[0]})")
    if latencies and base.samples:
        ratio = p95(latencies) / base.median
        print(f"  p95 {p95(latencies) * 1000:.0f} ms = {ratio:.2f}x the single-client median at the same global "
              f"limit (bound 3x: {'met' if ratio <= 3 and not problems else 'MISSED'}); p95/p95 "
              f"{p95(latencies) / p95(base.samples):.2f}x; max {max(latencies) * 1000:.0f} ms; "
              f"{len(latencies)} crawls in {wall:.1f} s", flush=True)


async def bench_fairness(site: TestSite, server: HttpServer, hog: str, light: str, urls: int) -> None:
    header(f"(3) fairness: a light client's crawl while another client's crawl_many of {urls} URLs runs")
    args = {"url": site.url("/tiny"), "output": "text"}
    async with http_session(server.url, light) as client:
        await call(client, "crawl_url", args)
        alone = []
        for _ in range(5):
            started = time.perf_counter()
            await call(client, "crawl_url", args)
            alone.append(time.perf_counter() - started)
        async with http_session(server.url, hog) as hog_client:
            many = asyncio.ensure_future(call(hog_client, "crawl_many", {
                "urls": [site.url(f"/tiny?n={i}") for i in range(urls)], "concurrency": 16, "output": "text"}))
            await asyncio.sleep(1.0)
            busy = []
            for _ in range(5):
                started = time.perf_counter()
                await call(client, "crawl_url", args)
                busy.append(time.perf_counter() - started)
            hog_done = many.done()
            await many
    base = Stats("light client alone", alone)
    print(base.row())
    print(Stats("light client during the other's crawl_many", busy).row(base))
    print(f"  (the crawl_many was {'already done' if hog_done else 'still running'} when the light client finished)")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--clients", type=int, default=None)
    parser.add_argument("--crawls", type=int, default=None)
    parser.add_argument("--no-adapt", action="store_true",
                        help="[limits] adapt_to_cpu = false: a fixed number of crawl slots, as before it existed")
    parser.add_argument("--endpoints", type=int, default=0,
                        help="serve through N local `playwright launch-server` endpoints instead of a local browser")
    parser.add_argument("--only", choices=["overhead", "clients", "fairness"], action="append",
                        help="run only these parts (repeatable)")
    opts = parser.parse_args()
    servers: list[BrowserServer] = []
    try:
        for _ in range(opts.endpoints):  # inside the try: a failed second start still stops the first
            servers.append(launch_server())
        return await run(opts, [server.url for server in servers])
    finally:
        for server in servers:
            server.stop()


async def run(opts: argparse.Namespace, endpoints: list[str]) -> int:
    clients = opts.clients or (6 if opts.quick else 20)
    crawls = opts.crawls or (4 if opts.quick else 25)
    folder = temp_dir()
    limit = 8  # [limits] max_concurrent_crawls (its default), the same for every phase
    # The single-client baseline holds as many sessions, and as many calls in flight, as all the clients together,
    # and may use the whole global limit; the queues hold every call in flight (no "busy" by construction).
    config = write_config(folder, f'[limits]\nmax_concurrent_crawls = {limit}\n'
                                  f'adapt_to_cpu = {"false" if opts.no_adapt else "true"}\n'
                                  f'max_queued_calls = {max(64, 2 * clients)}\n'
                                  '[server]\ntokens_file = "tokens.json"\n'
                                  f'max_sessions_per_client = {max(limit, clients)}\n'
                                  f'max_concurrent_crawls_per_client = {limit}\n'
                                  f'max_queued_calls_per_client = {max(32, 2 * clients)}\n'
                                  + (f'[browser]\nendpoints = {endpoints!r}\n' if endpoints else ''))
    if endpoints:
        print(f"browsers: {len(endpoints)} local `playwright launch-server` endpoints", flush=True)
    tokens = [add_token(config, f"c{i}") for i in range(max(clients, 2))]
    with ReposTestSite() as site:
        server = HttpServer(config)
        try:
            parts = opts.only or ["overhead", "clients", "fairness"]
            if "overhead" in parts:
                await bench_overhead(site, config, server, tokens[0], 5 if opts.quick else 30)
            if "clients" in parts:
                await bench_clients(site, server, tokens[:clients], crawls, limit)
            if "fairness" in parts:
                await bench_fairness(site, server, tokens[0], tokens[1], 20 if opts.quick else 200)
        finally:
            server.stop()
        print(f"\nHTTP server exit code after SIGTERM: {server.proc.returncode}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
