"""SIGTERM and SIGINT while a session is open: an orderly shutdown, fast, with no Chromium left behind."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from crawlkeeper.testing.site import TestSite

from helpers import RawServer, browsers, descendants, describe, survivors, write_config

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_shuts_down_in_order(signum: signal.Signals, tmp_path: Path, test_site: TestSite) -> None:
    server = RawServer(write_config(tmp_path))
    try:
        server.initialize()
        created = server.call_tool("create_session", {"session_id": "open", "url": test_site.url("/login")})
        assert created["isError"] is False, created
        crawled = server.call_tool("crawl_url", {"url": test_site.url("/cookies"), "session_id": "open"})
        assert crawled["isError"] is False, crawled

        tree = descendants(psutil.Process(server.proc.pid))
        assert browsers(tree), "no Chromium process while a session is open?"

        sent = time.monotonic()
        os.kill(server.proc.pid, signum)
        returncode = server.wait(3)
        took = time.monotonic() - sent
        assert returncode is not None, f"still running 3 s after {signum.name}; log:\n{server.log()[-3000:]}"
        print(f"\n{signum.name}: exited in {took:.2f} s with code {returncode}")

        left = survivors(tree, 5)
        assert not left, f"outlived the server: {describe(left)}"
        log = server.log()
        assert "session open closed (shutdown)" in log, log[-3000:]
        assert "Traceback" not in log, log[-3000:]
        for line in server.lines:
            assert json.loads(line)["jsonrpc"] == "2.0"
    finally:
        server.close()
