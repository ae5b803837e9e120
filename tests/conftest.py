"""Fixtures shared by every test folder. Keep this small: heavy fixtures live next to the tests that use them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from crawlkeeper.testing.site import TestSite


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """This repo runs its async tests on asyncio only (the shipped pytest plugin leaves the choice to projects)."""
    return "asyncio"


@pytest.fixture(scope="session")
def test_site() -> Iterator[TestSite]:
    """The loopback test website (login form, cookies, slow and long pages), started once per run."""
    with TestSite() as site:
        yield site
