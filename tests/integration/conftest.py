"""Integration tests share one server per module: anyio needs a module-scoped backend for that."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"
