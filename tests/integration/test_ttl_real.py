"""The ttl plugin in a real server: idle sessions expire and vanish, used ones stay. Uses `mcp.Client`."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest
from mcp import Client

from crawlkeeper.testing.site import TestSite

from helpers import server_params, text_of, write_config

pytestmark = pytest.mark.integration


@pytest.mark.anyio
async def test_idle_sessions_expire_and_used_ones_stay(tmp_path: Path, test_site: TestSite) -> None:
    config = write_config(tmp_path, "[plugins.ttl]\nidle_s = 2\n")
    with anyio.fail_after(90):
        # The newer client: tries server/discover first, falls back to initialize.
        async with Client(server_params(config, log_level="WARNING")) as client:  # stderr is not ours here

            async def ok(name: str, arguments: dict) -> dict:
                result = await client.call_tool(name, arguments)
                assert not result.is_error, text_of(result)
                return result.structured_content

            await ok("create_session", {"session_id": "idle"})
            idle_since = time.monotonic()
            busy = await ok("create_session", {"session_id": "busy"})
            assert busy["expires_at"] is not None
            assert {s["session_id"] for s in (await ok("list_sessions", {}))["sessions"]} == {"busy", "idle"}

            uses = 0
            while time.monotonic() - idle_since < 3.5:
                await anyio.sleep(0.3)  # plus the crawl itself: a use about every second
                crawled = await ok("crawl_url", {"url": test_site.url("/tiny"), "session_id": "busy"})
                assert crawled["session_id"] == "busy"
                uses += 1
            assert uses >= 3

            sessions = {s["session_id"]: s for s in (await ok("list_sessions", {}))["sessions"]}
            assert set(sessions) == {"busy"}
            assert sessions["busy"]["expires_at"] is not None

            result = await client.call_tool("crawl_url", {"url": test_site.url("/tiny"), "session_id": "idle"})
            assert result.is_error
            message = text_of(result)
            assert "'idle'" in message and "expired" in message and "create_session" in message

            still = await ok("crawl_url", {"url": test_site.url("/tiny"), "session_id": "busy"})
            assert still["status"] == 200
