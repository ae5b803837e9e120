"""Logged-out detection (`crawlkeeper_logged_out`, the profile's `[auth] logged_out_*`) and re-login, on the fake
browser: a site that logs the session out never has its login page returned as the content."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from crawlkeeper import AuthMethod, hookimpl

SITE = "https://example.com"
LOGIN_PAGE = "<html><head><title>Sign in</title></head><body><form id='login'><input id='user'></form></body></html>"
PRIVATE = "<html><head><title>Private</title></head><body><p id='me'>Welcome back</p></body></html>"


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str = "alice"
    fail: bool = False


class FakeLogin:
    """An auth method `fake` that "logs in" by setting the cookie the private page requires."""

    def __init__(self) -> None:
        self.logins = 0

    async def login(self, session: Any, params: Params) -> None:
        self.logins += 1
        if params.fail:
            raise RuntimeError("the password was refused")
        await session.context.add_cookies([{"name": "sid", "value": f"tok-{self.logins}", "url": SITE}])

    @hookimpl
    def crawlkeeper_auth_methods(self) -> list[AuthMethod]:
        return [AuthMethod("fake", "test login", Params, self.login)]


@pytest.fixture
def site(crawlkeeper_browser: Any) -> Any:
    crawlkeeper_browser.add_page(f"{SITE}/private", PRIVATE, requires_cookie="sid", login_url="/login")
    crawlkeeper_browser.add_page(f"{SITE}/login", LOGIN_PAGE)
    crawlkeeper_browser.add_page(f"{SITE}/denied", "<title>No</title>", status=401)
    return crawlkeeper_browser


@pytest.fixture
def login(crawlkeeper_register: Callable[..., Any]) -> FakeLogin:
    return crawlkeeper_register(FakeLogin(), "fakelogin")  # type: ignore[return-value]


async def log_out(app: Any, sid: str) -> None:
    await app.sessions.get(sid).context.clear_cookies()  # what a site's logout (or a server-side expiry) does


@pytest.mark.anyio
async def test_a_logged_out_session_logs_in_again_and_says_so(
    crawlkeeper_app: Any, site: Any, login: FakeLogin, write_profile: Callable[..., Any]
) -> None:
    write_profile("work", '[auth]\nmethod = "fake"\nlogged_out_url = "/login"\n')
    await crawlkeeper_app.create_session(session_id="w", profile="work")
    assert login.logins == 1
    first = await crawlkeeper_app.crawl(f"{SITE}/private", session_id="w")
    assert first["relogged_in"] is False and first["title"] == "Private"
    await log_out(crawlkeeper_app, "w")
    again = await crawlkeeper_app.crawl(f"{SITE}/private", session_id="w")
    assert again["relogged_in"] is True and again["title"] == "Private" and "Welcome back" in again["content"]
    assert login.logins == 2
    # asking for the login page itself is not a sign of being logged out
    page = await crawlkeeper_app.crawl(f"{SITE}/login", session_id="w")
    assert page["title"] == "Sign in" and page["relogged_in"] is False and login.logins == 2


@pytest.mark.anyio
async def test_without_an_auth_method_it_is_a_clear_error_never_the_login_page(
    crawlkeeper_app: Any, site: Any, write_profile: Callable[..., Any]
) -> None:
    write_profile("cookies-only", '[auth]\nlogged_out_selector = "form#login"\n')
    await crawlkeeper_app.create_session(session_id="c", profile="cookies-only",
                                         cookies=[{"name": "sid", "value": "v", "url": SITE}])
    assert (await crawlkeeper_app.crawl(f"{SITE}/private", session_id="c"))["title"] == "Private"
    await log_out(crawlkeeper_app, "c")
    with pytest.raises(Exception) as info:
        await crawlkeeper_app.crawl(f"{SITE}/private", session_id="c")
    message = str(info.value)
    assert "session 'c' was logged out by the site" in message and "/login" in message
    assert "[auth] method" in message and "Sign in" not in message


@pytest.mark.anyio
async def test_status_401_is_logged_out_by_default_and_relogins_are_bounded(
    crawlkeeper_app: Any, site: Any, login: FakeLogin, write_profile: Callable[..., Any]
) -> None:
    write_profile("api", '[auth]\nmethod = "fake"\n')
    await crawlkeeper_app.create_session(session_id="a", profile="api")
    for _ in range(3):  # [sessions] max_relogins_per_hour = 3
        with pytest.raises(Exception, match="still logged out after logging in again"):
            await crawlkeeper_app.crawl(f"{SITE}/denied", session_id="a")
    with pytest.raises(Exception, match=r"already logged in again 3 times in the last hour"):
        await crawlkeeper_app.crawl(f"{SITE}/denied", session_id="a")
    assert login.logins == 1 + 3


@pytest.mark.anyio
async def test_a_failing_relogin_is_a_clear_error(
    crawlkeeper_app: Any, site: Any, login: FakeLogin, write_profile: Callable[..., Any]
) -> None:
    write_profile("flaky", '[auth]\nmethod = "fake"\nlogged_out_url = "/login$"\n')
    await crawlkeeper_app.create_session(session_id="f", profile="flaky")
    write_profile("flaky", '[auth]\nmethod = "fake"\nfail = true\nlogged_out_url = "/login$"\n')
    await log_out(crawlkeeper_app, "f")
    with pytest.raises(Exception) as info:
        await crawlkeeper_app.crawl(f"{SITE}/private", session_id="f")
    assert "logging in again with 'fake' failed" in str(info.value) and "password was refused" in str(info.value)


class JudgeByTitle:
    @hookimpl
    def crawlkeeper_logged_out(self, session: Any, result: Any) -> bool | None:
        return result.title == "Sign in"


@pytest.mark.anyio
async def test_a_plugin_can_judge(crawlkeeper_app: Any, site: Any, login: FakeLogin,
                                  crawlkeeper_register: Callable[..., Any]) -> None:
    crawlkeeper_register(JudgeByTitle(), "judge")
    await crawlkeeper_app.create_session(session_id="j", auth="fake")
    await log_out(crawlkeeper_app, "j")
    result = await crawlkeeper_app.crawl(f"{SITE}/private", session_id="j")
    assert result["relogged_in"] is True and login.logins == 2


def test_a_bad_logged_out_setting_names_the_profile(crawlkeeper_app: Any, write_profile: Callable[..., Any]) -> None:
    write_profile("bad", '[auth]\nmethod = "fake"\nlogged_out_selector = "form[["\n')
    with pytest.raises(Exception, match=r"bad\.toml.*logged_out_selector"):
        crawlkeeper_app.profile("bad")


SCHEMA = {"baseSelector": "body", "fields": [{"name": "text", "selector": "p#me", "type": "text"}]}


@pytest.mark.anyio
async def test_screenshot_extract_and_crawl_site_are_judged_and_log_in_again(
    crawlkeeper_app: Any, site: Any, login: FakeLogin, write_profile: Callable[..., Any]
) -> None:
    from crawlkeeper.extraction import ExtractSchema, extract
    from crawlkeeper.screenshots import take_screenshot
    from crawlkeeper.site_crawl import crawl_site

    write_profile("work", '[auth]\nmethod = "fake"\nlogged_out_url = "/login"\n')
    await crawlkeeper_app.create_session(session_id="w", profile="work")
    shot, images = await take_screenshot(crawlkeeper_app.target(session_id="w"), f"{SITE}/private")
    assert shot["relogged_in"] is False and shot["restored"] is False and images
    await log_out(crawlkeeper_app, "w")
    shot, _ = await take_screenshot(crawlkeeper_app.target(session_id="w"), f"{SITE}/private")
    assert shot["relogged_in"] is True and shot["final_url"] == f"{SITE}/private" and login.logins == 2
    await log_out(crawlkeeper_app, "w")
    items = await extract(crawlkeeper_app.target(session_id="w"), f"{SITE}/private",
                          ExtractSchema.model_validate(SCHEMA))
    assert items["relogged_in"] is True and items["final_url"] == f"{SITE}/private" and login.logins == 3
    assert items["items"] == [{"text": "Welcome back"}]
    await log_out(crawlkeeper_app, "w")
    crawled = await crawl_site(crawlkeeper_app, f"{SITE}/private", session_id="w", max_pages=1,
                               robots_fetcher=_no_robots)
    assert crawled["relogged_in"] is True and crawled["restored"] is False
    assert crawled["pages"][0]["title"] == "Private" and login.logins == 4
    # without a session nothing is judged and nothing is reported
    shot, _ = await take_screenshot(crawlkeeper_app.target(), f"{SITE}/login")
    assert "relogged_in" not in shot


@pytest.mark.anyio
async def test_a_logged_out_screenshot_without_auth_is_an_error_never_the_login_page(
    crawlkeeper_app: Any, site: Any, write_profile: Callable[..., Any]
) -> None:
    from crawlkeeper.extraction import ExtractSchema, extract
    from crawlkeeper.screenshots import take_screenshot

    write_profile("sel", '[auth]\nlogged_out_selector = "form#login"\n')
    await crawlkeeper_app.create_session(session_id="s", profile="sel",
                                         cookies=[{"name": "sid", "value": "v", "url": SITE}])
    await log_out(crawlkeeper_app, "s")
    with pytest.raises(Exception, match=r"session 's' was logged out by the site .*/login"):
        await take_screenshot(crawlkeeper_app.target(session_id="s"), f"{SITE}/private")
    with pytest.raises(Exception, match=r"session 's' was logged out by the site"):
        await extract(crawlkeeper_app.target(session_id="s"), f"{SITE}/private", ExtractSchema.model_validate(SCHEMA))


async def _no_robots(url: str) -> Any:
    from crawlkeeper.robots import RobotsFile

    return RobotsFile(status=404)
