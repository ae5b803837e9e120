"""A plugin's own test setup: crawlkeeper's fixtures come from its pytest plugin; the async backend is ours to pick."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
