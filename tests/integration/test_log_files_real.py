"""No file crawlkeeper or anything it starts writes holds a URL's query token or an unredacted error.

crawl4ai's default logger appended every crawled URL (query tokens included) and every Playwright error to
``<cache>/.crawl4ai/crawler.log``, unrotated. The server here gets its own HOME, XDG dirs and TMPDIR, so every
file it (crawl4ai, Playwright, Chromium) writes lands in this test's folder and can be searched.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from crawlkeeper.testing.site import TestSite

from helpers import mcp_server, write_config

pytestmark = pytest.mark.integration

TOKEN = "CANARY-QUERY-TOKEN-91c4e7"


def files_containing(root: Path, needle: bytes) -> list[str]:
    found = []
    for path in root.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
                found.append(str(path.relative_to(root)))
        except OSError:
            continue
    return found


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short folder: Chromium's socket paths under TMPDIR must fit in 108 bytes (pytest's tmp_path does not)."""
    with tempfile.TemporaryDirectory(prefix="cklog-") as folder:
        yield Path(folder)


@pytest.mark.anyio
async def test_no_file_records_a_crawled_urls_query_token(short_tmp: Path, test_site: TestSite) -> None:
    tmp_path = short_tmp
    config = write_config(tmp_path / "config")
    home = tmp_path / "home"
    env = {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"), "XDG_CONFIG_HOME": str(home / ".config"),
           "XDG_DATA_HOME": str(home / ".local/share"), "XDG_STATE_HOME": str(home / ".local/state"),
           "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    # What an older version left behind is removed at start-up.
    stale = home / ".cache/crawlkeeper/crawl4ai/.crawl4ai/crawler.log"
    stale.parent.mkdir(parents=True)
    stale.write_text(f"[FETCH] http://example.test/?token={TOKEN}-OLD\n")
    async with mcp_server(config, env=env, log_level="DEBUG") as server:
        page = await server.ok("crawl_url", {"url": test_site.url(f"/tiny?token={TOKEN}&x=1")})
        assert page["status"] == 200
        # A failing crawl: crawl4ai logs the full Playwright error with the URL.
        failed = await server.call("crawl_url", {"url": test_site.url(f"/slow?s=5&token={TOKEN}-slow"),
                                                 "timeout_s": 1})
        assert failed.is_error
        running = [f for f in files_containing(tmp_path, TOKEN.encode()) if f.endswith(".log")]
        assert running == [], f"log files hold the token while the server runs: {running}"
        log = server.log()
    assert "crawlkeeper.crawl4ai" in log  # crawl4ai's messages do reach the (redacted) stderr log ...
    assert TOKEN not in log  # ... without the query string
    leaked = files_containing(tmp_path, TOKEN.encode())
    assert leaked == [], f"files holding the URL's query token after the server stopped: {leaked}"
    assert not stale.exists()
