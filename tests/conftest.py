"""Fixtures shared by every test folder. Keep this small: heavy fixtures live next to the tests that use them."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest

from crawlkeeper.testing.site import TestSite

from sites import ReposTestSite

# Nothing a test runs (servers it spawns included) may read or write the developer's saved sessions, state key,
# config or keyring: the user data and config dirs point into a folder of this run, and the keyring is off.
_HOME = tempfile.mkdtemp(prefix="crawlkeeper-tests-")
os.environ["XDG_DATA_HOME"] = os.path.join(_HOME, "data")
os.environ["XDG_CONFIG_HOME"] = os.path.join(_HOME, "config")
os.environ["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """This repo runs its async tests on asyncio only (the shipped pytest plugin leaves the choice to projects)."""
    return "asyncio"


@pytest.fixture(scope="session")
def test_site() -> Iterator[TestSite]:
    """The loopback test website (login form, cookies, slow and long pages), started once per run: the shipped
    login site plus this repo's test-only routes (``sites.ReposTestSite``)."""
    with ReposTestSite() as site:
        yield site
