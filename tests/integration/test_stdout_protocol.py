"""stdout carries only JSON-RPC: raw newline-delimited messages over a pipe, then an orderly exit on EOF."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from crawlkeeper.testing.site import TestSite

from helpers import RawServer, browsers, descendants, describe, survivors, write_config

pytestmark = pytest.mark.integration


@pytest.fixture
def raw_server(tmp_path: Path) -> Iterator[RawServer]:
    server = RawServer(write_config(tmp_path), log_level="DEBUG")
    try:
        yield server
    finally:
        server.close()


def test_stdout_is_only_json_rpc_and_eof_shuts_down(raw_server: RawServer, test_site: TestSite) -> None:
    init = raw_server.initialize()
    assert init["result"]["serverInfo"]["name"] == "crawlkeeper"
    assert "tools" in init["result"]["capabilities"]

    listed = raw_server.request("tools/list")
    assert {t["name"] for t in listed["result"]["tools"]} >= {"crawl_url", "crawl_many", "create_session"}

    crawled = raw_server.call_tool("crawl_url", {"url": test_site.url("/links"), "output": "links"})
    assert crawled["isError"] is False
    assert crawled["structuredContent"]["status"] == 200
    assert "https://example.com/docs" in crawled["structuredContent"]["content"]
    refused = raw_server.call_tool("crawl_url", {"url": "file:///etc/passwd"})
    assert refused["isError"] is True
    unknown = raw_server.request("tools/call", {"name": "no_such_tool", "arguments": {}})
    assert "error" in unknown or unknown["result"]["isError"] is True

    server = psutil.Process(raw_server.proc.pid)
    tree = descendants(server)
    assert browsers(tree), "the crawl ran without a Chromium child?"

    closed_at = time.monotonic()
    raw_server.close_stdin()
    returncode = raw_server.wait(5)
    assert returncode is not None, f"still running 5 s after stdin closed; log:\n{raw_server.log()[-3000:]}"
    print(f"\nexit {time.monotonic() - closed_at:.2f} s after stdin closed, code {returncode}")
    assert returncode == 0
    left = survivors(tree, 5)
    assert not left, f"processes outlived the server: {describe(left)}"

    assert raw_server.lines, "nothing on stdout"
    ids = []
    for line in raw_server.lines:
        message = json.loads(line)  # every line, not only the ones we waited for
        assert isinstance(message, dict) and message.get("jsonrpc") == "2.0", line
        assert "id" in message or "method" in message, line
        ids.append(message.get("id"))
    assert [i for i in ids if i is not None] == [1, 2, 3, 4, 5]
    # crawl4ai and the browser did log (to stderr), so the check above was not vacuous.
    assert "browser started" in raw_server.log()
