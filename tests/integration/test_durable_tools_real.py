"""Every page tool on a saved session, with real Chromium and the real test site: `screenshot`, `extract` and
`crawl_site` restore a hibernated session (and one saved by a server that has ended) like `crawl_url`, say so,
and a page the site sent logged out is never the result: the session logs in again through its auth method."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from crawlkeeper import AuthMethod, hookimpl
from crawlkeeper.app import App
from crawlkeeper.extraction import ExtractSchema, extract
from crawlkeeper.robots import RobotsFile
from crawlkeeper.runtime import build_app
from crawlkeeper.screenshots import take_screenshot
from crawlkeeper.site_crawl import crawl_site
from crawlkeeper.testing.site import TestSite

from helpers import write_config

pytestmark = pytest.mark.integration

WELCOME = {"baseSelector": "body", "fields": [{"name": "welcome", "selector": "#welcome", "type": "text"}]}


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SiteLogin:
    """An auth method `sitelogin` that fills the test site's real login form in the session's page."""

    def __init__(self, site: TestSite) -> None:
        self.site = site
        self.logins = 0

    async def login(self, session: Any, params: NoParams) -> None:
        self.logins += 1
        page = await session.ensure_page()
        await page.goto(self.site.url("/login"))
        await page.fill("#username", "alice")
        await page.fill("#password", "wonderland")
        async with page.expect_navigation():
            await page.click("#submit")

    @hookimpl
    def crawlkeeper_auth_methods(self) -> list[AuthMethod]:
        return [AuthMethod("sitelogin", "logs in on the test site", NoParams, self.login)]


async def _no_robots(url: str) -> RobotsFile:
    return RobotsFile(status=404)


async def started(config: Path, plugin: SiteLogin) -> App:
    app = build_app(config, extra_plugins=[("sitelogin", plugin)])
    await app.startup()
    return app


async def hibernated(app: App, sid: str) -> None:
    assert await app.hibernate(app.sessions.get(sid))
    assert app.sessions.peek(sid) is None


def welcome(text: str) -> bool:
    return "Welcome, alice!" in text


@pytest.mark.anyio
@pytest.mark.timeout(360)  # two app starts and ten page loads: about a minute, several on a loaded 2-core box
async def test_page_tools_restore_saved_sessions_and_log_in_again(tmp_path: Path, test_site: TestSite) -> None:
    config = write_config(tmp_path / "tools", "[sessions]\nmax_relogins_per_hour = 20\n", profiles={
        "work": '[auth]\nmethod = "sitelogin"\nlogged_out_url = "/login"\n'})
    plugin = SiteLogin(test_site)
    private = test_site.url("/private")
    schema = ExtractSchema.model_validate(WELCOME)
    app = await started(config, plugin)
    try:
        await app.create_session(session_id="w", profile="work")
        assert plugin.logins == 1

        # hibernated: each tool restores it, logged in, and says so
        await hibernated(app, "w")
        shot, images = await take_screenshot(app.target(session_id="w"), private)
        assert shot["final_url"] == private and shot["restored"] is True and shot["relogged_in"] is False
        assert images and shot["note"]
        await hibernated(app, "w")
        items = await extract(app.target(session_id="w"), private, schema)
        assert items["final_url"] == private and items["restored"] is True
        assert welcome(str(items["items"]))
        await hibernated(app, "w")
        site = await crawl_site(app, private, session_id="w", max_pages=1, robots_fetcher=_no_robots)
        assert site["restored"] is True and site["relogged_in"] is False
        assert site["pages"][0]["final_url"] == private and welcome(site["pages"][0]["content"])
        assert plugin.logins == 1  # restoring never logs in again

        # logged out by the site: a re-login, never the login page as the result
        for tool in ("screenshot", "extract", "crawl_site"):
            await app.sessions.get("w").context.clear_cookies()
            if tool == "screenshot":
                result, _ = await take_screenshot(app.target(session_id="w"), private)
                final = result["final_url"]
            elif tool == "extract":
                result = await extract(app.target(session_id="w"), private, schema)
                final = result["final_url"]
                assert welcome(str(result["items"])), tool
            else:
                result = await crawl_site(app, private, session_id="w", max_pages=1, robots_fetcher=_no_robots)
                final = result["pages"][0]["final_url"]
                assert welcome(result["pages"][0]["content"]), tool
            assert result["relogged_in"] is True and result["restored"] is False, tool
            assert final == private, tool
        assert plugin.logins == 4
    finally:
        await app.shutdown()

    # a new server (the session was saved at shutdown): crawl_site restores it on its first page
    app = await started(config, plugin)
    try:
        site = await crawl_site(app, private, session_id="w", max_pages=1, robots_fetcher=_no_robots)
        assert site["restored"] is True and site["pages"][0]["final_url"] == private
        assert welcome(site["pages"][0]["content"]) and plugin.logins == 4
    finally:
        await app.shutdown()
