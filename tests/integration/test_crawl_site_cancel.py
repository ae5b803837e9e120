"""An MCP client cancels crawl_site mid-crawl, over stdio, with real Chromium: the crawl stops within a second,
nothing is sent for the cancelled call (no half-written page list), and the server keeps serving."""

from __future__ import annotations

import json
import queue
import threading
import time
from pathlib import Path

import pytest

from helpers import RawServer, write_config
from sites import ExtraSite, Request, Response, html_page

pytestmark = pytest.mark.integration

CALL_ID = 4242


def test_cancelling_crawl_site_stops_it_within_a_second_and_the_server_keeps_serving(tmp_path: Path) -> None:
    hits: list[float] = []
    lock = threading.Lock()

    def slow_tree(request: Request) -> Response:
        i = int(request.path.rsplit("/", 1)[1])
        with lock:
            hits.append(time.monotonic())
        time.sleep(0.15)  # a crawl of 400 such pages takes far longer than the test waits
        links = "".join(f'<a href="/p/{j}">page {j}</a> ' for j in (2 * i + 1, 2 * i + 2) if j < 400)
        return 200, {}, html_page(f"Page {i}", f"<p>{'Words of a slow page. ' * 10}</p>{links}")

    with ExtraSite() as site:
        site.route("/p/*", slow_tree)
        site.page("/robots.txt", "User-agent: *\nAllow: /\n", headers={"content-type": "text/plain"})
        server = RawServer(write_config(tmp_path, '[crawl]\nper_host_concurrency = 4\n'))
        try:
            server.initialize()
            server.send({"jsonrpc": "2.0", "id": CALL_ID, "method": "tools/call", "params": {
                "name": "crawl_site", "_meta": {"progressToken": "site"},
                "arguments": {"url": site.url("/p/0"), "max_pages": 400, "max_depth": 20, "concurrency": 4}}})
            progress = 0
            deadline = time.monotonic() + 90
            while progress < 3:  # mid-crawl: a few pages done, many to go
                try:
                    line = server._queue.get(timeout=max(0.01, deadline - time.monotonic()))
                except queue.Empty:
                    raise AssertionError(f"no progress from crawl_site; log:\n{server.log()}") from None
                assert line is not None, server.log()
                message = json.loads(line)
                assert message.get("id") != CALL_ID, f"crawl_site ended before it was cancelled: {message}"
                if message.get("method") == "notifications/progress":
                    progress += 1
            server.notify("notifications/cancelled", {"requestId": CALL_ID, "reason": "the user stopped it"})
            cancelled_at = time.monotonic()
            time.sleep(2.5)
            with lock:
                late = [round(t - cancelled_at, 2) for t in hits if t > cancelled_at + 1.0]
                loaded = len(hits)
            assert not late, f"pages were still requested after the cancellation (s after it): {late}"
            assert loaded < 100

            # The server keeps serving, in the same browser.
            after = server.call_tool("crawl_url", {"url": site.url("/p/1"), "output": "text"}, timeout=60)
            assert not after.get("isError"), after
            assert "Words of a slow page" in after["structuredContent"]["content"]
            # Nothing was ever answered for the cancelled call: no partial result, no error.
            answers = [json.loads(line) for line in server.lines if b'"id"' in line]
            assert not [m for m in answers if m.get("id") == CALL_ID]
            assert "Traceback" not in server.log()
        finally:
            server.close()
