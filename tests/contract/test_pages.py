"""Navigation, redirects, page reuse, closing and ``Session.ensure_page`` behave the same in the fake and in
Chromium."""

from __future__ import annotations

import functools

import pytest

from crawlkeeper import Session

from backends import Backend

pytestmark = pytest.mark.anyio


async def test_a_new_page_is_blank_and_listed(backend: Backend) -> None:
    context = await backend.new_context()
    page = await backend.new_page(context)
    assert page.url == "about:blank"
    assert page in context.pages
    assert not page.is_closed()


async def test_goto_returns_the_final_response(backend: Backend) -> None:
    context = await backend.new_context()
    page = await backend.new_page(context)
    response = await page.goto(backend.url("/page"))
    assert response.status == 200
    assert response.ok
    assert response.url == page.url == backend.url("/page")
    assert await page.title() == "Page"
    assert "Some content." in await page.content()


async def test_a_chain_of_redirects_lands_on_the_last_page(backend: Backend) -> None:
    context = await backend.new_context()
    page = await backend.new_page(context)
    response = await page.goto(backend.url("/hop1"))
    assert response.status == 200
    assert response.url == page.url == backend.url("/other")
    assert await page.title() == "Other"


async def test_an_error_status_is_a_response_not_an_exception(backend: Backend) -> None:
    context = await backend.new_context()
    page = await backend.new_page(context)
    response = await page.goto(backend.url("/missing"))
    assert response.status == 404
    assert not response.ok
    assert page.url == backend.url("/missing")
    unknown = await page.goto(backend.url("/no/such/page"))
    assert unknown.status == 404


async def test_a_page_is_reused_for_several_navigations(backend: Backend) -> None:
    context = await backend.new_context()
    page = await backend.new_page(context)
    await page.goto(backend.url("/page"))
    await page.goto(backend.url("/other"))
    assert page.url == backend.url("/other")
    assert "Other content." in await page.content()
    assert "Some content." not in await page.content()
    assert context.pages == [page]


async def test_pages_of_one_context_share_its_cookies(backend: Backend) -> None:
    context = await backend.new_context()
    first = await backend.new_page(context)
    await first.goto(backend.url("/do-login"))
    second = await backend.new_page(context)
    await second.goto(backend.url("/private"))
    assert second.url == backend.url("/private")
    assert len(context.pages) == 2


async def test_a_closed_page_leaves_the_context_and_refuses_navigation(backend: Backend) -> None:
    context = await backend.new_context()
    page = await backend.new_page(context)
    other = await backend.new_page(context)
    await page.close()
    assert page.is_closed()
    assert context.pages == [other]
    with pytest.raises(Exception, match="closed"):
        await page.goto(backend.url("/page"))
    await other.goto(backend.url("/page"))  # the context lives on


async def test_closing_a_context_closes_its_pages(backend: Backend) -> None:
    context = await backend.new_context()
    page = await backend.new_page(context)
    await context.close()
    assert page.is_closed()
    with pytest.raises(Exception, match="closed"):
        await page.goto(backend.url("/page"))
    with pytest.raises(Exception, match="closed"):
        await backend.new_page(context)
    await context.close()  # closing twice is harmless


async def test_ensure_page_opens_one_page_on_first_use(backend: Backend) -> None:
    context = await backend.new_context()
    session = Session(id="s", profile=None, context=context, page=None,
                      page_factory=functools.partial(backend.new_page, context))
    page = await session.ensure_page()
    assert page is session.page
    assert await session.ensure_page() is page
    assert context.pages == [page]
    await page.goto(backend.url("/page"))
    assert session.page.url == backend.url("/page")
