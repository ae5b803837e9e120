"""Integration tests share one server per module: anyio needs a module-scoped backend for that. Fixtures used by
more than one module live here."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on loopback (the Redis store example's own helper: one copy for every Redis test)."""
    from crawlkeeper_redis_store.testing import RedisServerMissing, redis_server  # imports redis: only when used

    try:
        with redis_server(tmp_path_factory.mktemp("redis")) as url:
            yield url
    except RedisServerMissing as exc:
        pytest.fail(f"{exc} (./run test installs it)")
