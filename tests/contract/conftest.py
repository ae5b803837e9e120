"""One behaviour suite, two browsers: the fake that plugin authors test with, and real Chromium.

Every test in ``tests/contract/`` takes the ``backend`` fixture and runs twice: against
:class:`crawlkeeper.testing.FakeBrowser` (fast, a unit test) and against crawlkeeper's real ``ChromiumBackend``
(marked ``integration``). Both serve the same little site, declared once in :data:`SITE`: a real HTTP server on
127.0.0.1 serves it to Chromium, and the same routes are registered as canned pages in the fake. A plugin
that passes its tests with the fake then behaves the same in production; a difference is a bug in the fake.

Reusing it in a new module (``tests/contract/test_headers.py`` does; import ``Backend`` and ``Route`` from
``backends``)::

    @pytest.mark.anyio
    async def test_something(backend: Backend) -> None:
        context = await backend.new_context(extra_headers={"X-A": "1"})
        page = await backend.new_page(context)
        response = await page.goto(backend.url("/page"))
        assert backend.requests("/page")[-1]["x-a"] == "1"   # headers the site received, lower-cased names

``backend.route(path, Route(...))`` adds a route to both sites for one test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from crawlkeeper.testing import FakeBrowser

from backends import SITE, Backend, ContractSite, add_to_fake, page_html


# Module scope, not session: while an async fixture of this scope lives, anyio's pytest plugin marks the thread
# as running asyncio, so any later sync test calling anyio.run() failed with "Already running asyncio in this
# thread" (the headed-login test did, but only after these modules in a full run).
@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def contract_site() -> Iterator[ContractSite]:
    with ContractSite() as site:
        yield site


class LazyChromium:
    """crawlkeeper's real browser backend (Playwright-launched Chromium), started by the first test that needs
    it and shared by the rest of the module; a run of the fake cases alone never starts it."""

    def __init__(self) -> None:
        self.browser: Any = None

    async def get(self) -> Any:
        if self.browser is None:
            from crawlkeeper.browser import ChromiumBackend

            browser = ChromiumBackend(headless=True)
            await browser.start()
            self.browser = browser
        return self.browser

    async def close(self) -> None:
        if self.browser is not None:
            await self.browser.close()


@pytest.fixture(scope="module")
async def chromium(anyio_backend: str) -> AsyncIterator[LazyChromium]:
    holder = LazyChromium()
    try:
        yield holder
    finally:
        await holder.close()


@pytest.fixture(params=["fake", pytest.param("chromium", marks=pytest.mark.integration)])
async def backend(
    request: pytest.FixtureRequest, contract_site: ContractSite, chromium: LazyChromium
) -> AsyncIterator[Backend]:
    """The same site behind the fake browser or real Chromium; see the module docstring."""
    contract_site.routes = dict(SITE)
    contract_site.received.clear()
    if request.param == "fake":
        fake = FakeBrowser()
        for path, route in SITE.items():
            add_to_fake(fake, contract_site.base, path, route)
        # anything else on the site is a 404, as from the real server
        fake.add_page(contract_site.base + "/*", page_html("Not found", "<p>No such page.</p>"), status=404)
        browser: Any = fake
    else:
        browser = await chromium.get()
    made = Backend(request.param, browser, contract_site)
    try:
        yield made
    finally:
        await made.close()
