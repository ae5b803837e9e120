"""Fixtures shared by every test folder. Keep this small: heavy fixtures live next to the tests that use them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from crawlkeeper.testing.site import TestSite


@pytest.fixture(scope="session")
def test_site() -> Iterator[TestSite]:
    """The loopback test website (login form, cookies, slow and long pages), started once per run."""
    with TestSite() as site:
        yield site
