"""Cookies behave the same in the fake and in Chromium: per-context jars, Playwright's cookie shape, replacing,
filtering by URL, cookies set by the site, and errors for malformed cookies."""

from __future__ import annotations

import time

import pytest

from backends import Backend

pytestmark = pytest.mark.anyio

KEYS = {"name", "value", "domain", "path", "expires", "httpOnly", "secure", "sameSite"}


def by_name(cookies: list[dict]) -> dict[str, dict]:
    return {c["name"]: c for c in cookies}


async def test_cookies_are_per_context(backend: Backend) -> None:
    a = await backend.new_context()
    b = await backend.new_context()
    await a.add_cookies([{"name": "only_a", "value": "1", "url": backend.url("/")}])
    assert [c["name"] for c in await a.cookies()] == ["only_a"]
    assert await b.cookies() == []
    page_b = await backend.new_page(b)
    response = await page_b.goto(backend.url("/private"))
    assert page_b.url == backend.url("/login")  # b is not logged in by a's cookie
    assert response.status == 200


async def test_cookie_shape_is_playwrights(backend: Backend) -> None:
    context = await backend.new_context()
    await context.add_cookies([
        {"name": "by_url", "value": "1", "url": backend.url("/")},
        {"name": "by_url_deep", "value": "2", "url": backend.url("/a/b")},
        {"name": "host_only", "value": "3", "domain": "example.com", "path": "/"},
        {"name": "dotted", "value": "4", "domain": ".example.org", "path": "/p"},
        {"name": "full", "value": "5", "domain": "127.0.0.1", "path": "/", "expires": time.time() + 3600,
         "httpOnly": True, "secure": True, "sameSite": "Strict"},
    ])
    cookies = by_name(await context.cookies())
    assert set(cookies) == {"by_url", "by_url_deep", "host_only", "dotted", "full"}
    for cookie in cookies.values():
        assert set(cookie) == KEYS, cookie
    assert cookies["by_url"] | {} == {"name": "by_url", "value": "1", "domain": "127.0.0.1", "path": "/",
                                      "expires": -1, "httpOnly": False, "secure": False, "sameSite": "Lax"}
    assert cookies["by_url_deep"]["path"] == "/a/"  # a url's directory, as a browser does for Set-Cookie
    assert cookies["host_only"]["domain"] == "example.com"  # no dot added
    assert cookies["dotted"]["domain"] == ".example.org"  # the dot kept
    assert cookies["dotted"]["path"] == "/p"
    full = cookies["full"]
    assert (full["httpOnly"], full["secure"], full["sameSite"]) == (True, True, "Strict")
    assert isinstance(full["expires"], float) and abs(full["expires"] - (time.time() + 3600)) < 120


async def test_expiry_is_capped_at_400_days(backend: Backend) -> None:
    context = await backend.new_context()
    ten_years = time.time() + 10 * 365 * 86400
    await context.add_cookies([{"name": "far", "value": "1", "url": backend.url("/"), "expires": ten_years}])
    (cookie,) = await context.cookies()
    assert cookie["expires"] <= time.time() + 401 * 86400


async def test_a_cookie_with_the_same_name_domain_and_path_replaces_the_old_one(backend: Backend) -> None:
    context = await backend.new_context()
    await context.add_cookies([{"name": "c", "value": "old", "domain": "127.0.0.1", "path": "/"}])
    await context.add_cookies([{"name": "c", "value": "new", "domain": "127.0.0.1", "path": "/"}])
    await context.add_cookies([{"name": "c", "value": "elsewhere", "domain": "127.0.0.1", "path": "/x"}])
    cookies = sorted((c["path"], c["value"]) for c in await context.cookies())
    assert cookies == [("/", "new"), ("/x", "elsewhere")]


async def test_cookies_filtered_by_url(backend: Backend) -> None:
    context = await backend.new_context()
    await context.add_cookies([
        {"name": "root", "value": "1", "domain": "127.0.0.1", "path": "/"},
        {"name": "deep", "value": "2", "domain": "127.0.0.1", "path": "/x/"},
        {"name": "other_host", "value": "3", "domain": "example.com", "path": "/"},
        {"name": "sub", "value": "4", "domain": ".example.org", "path": "/"},
    ])
    assert sorted(c["name"] for c in await context.cookies(backend.url("/"))) == ["root"]
    assert sorted(c["name"] for c in await context.cookies([backend.url("/x/y")])) == ["deep", "root"]
    assert sorted(c["name"] for c in await context.cookies("https://www.example.org/")) == ["sub"]
    assert sorted(c["name"] for c in await context.cookies("https://example.com/a")) == ["other_host"]
    assert len(await context.cookies([])) == 4  # an empty list means all, as no argument does


async def test_cookies_set_by_the_site(backend: Backend) -> None:
    context = await backend.new_context()
    page = await backend.new_page(context)
    response = await page.goto(backend.url("/do-login"))
    assert page.url == backend.url("/private")
    assert response.status == 200
    assert "Welcome back" in await page.content()
    (cookie,) = await context.cookies()
    assert cookie == {"name": "sid", "value": "s3cr3t-session", "domain": "127.0.0.1", "path": "/",
                      "expires": -1, "httpOnly": False, "secure": False, "sameSite": "Lax"}


async def test_clear_cookies_logs_the_context_out(backend: Backend) -> None:
    context = await backend.new_context()
    page = await backend.new_page(context)
    await page.goto(backend.url("/do-login"))
    await context.clear_cookies()
    assert await context.cookies() == []
    await page.goto(backend.url("/private"))
    assert page.url == backend.url("/login")


@pytest.mark.parametrize(
    "cookie",
    [
        {"name": "no_place", "value": "1"},
        {"name": "no_path", "value": "1", "domain": "example.com"},
    ],
)
async def test_a_cookie_without_url_or_domain_and_path_is_refused(backend: Backend, cookie: dict) -> None:
    context = await backend.new_context()
    with pytest.raises(Exception, match="url or a domain/path pair"):
        await context.add_cookies([cookie])
    assert await context.cookies() == []


async def test_a_closed_context_refuses_cookie_calls(backend: Backend) -> None:
    context = await backend.new_context()
    await context.close()
    with pytest.raises(Exception, match="closed"):
        await context.cookies()
    with pytest.raises(Exception, match="closed"):
        await context.add_cookies([{"name": "x", "value": "1", "url": backend.url("/")}])


async def test_a_context_made_in_advance_is_as_new_as_one_made_now(backend: Backend) -> None:
    """Chromium keeps a spare context (spare.py): the one handed out must be empty, have the options asked for,
    and never be handed out twice; other options get a context made for them."""
    import asyncio

    first = await backend.new_context(viewport_width=640)
    await first.add_cookies([{"name": "first", "value": "1", "url": backend.url("/")}])
    spare = getattr(backend.browser, "spare", None)
    taken = spare.taken if spare is not None else 0
    await asyncio.sleep(1.0)  # the spare for these options is made in the background meanwhile
    second = await backend.new_context(viewport_width=640)
    if spare is not None:
        assert spare.taken == taken + 1  # it was the spare
    other = await backend.new_context(viewport_width=700)  # other options: not the spare
    assert second is not first and other is not second
    assert await second.cookies() == [] and await other.cookies() == []
    for context, width in ((second, 640), (other, 700)):
        page = await backend.new_page(context)
        await page.goto(backend.url("/page"))
        if backend.kind == "chromium":  # the fake runs no scripts
            assert await page.evaluate("[innerWidth, localStorage.length, document.cookie]") == [width, 0, ""]
