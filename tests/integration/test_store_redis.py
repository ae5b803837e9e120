"""The plugin guide's Redis store, exactly as printed, against a real redis-server on loopback: sessions are
saved there (encrypted), restored by another app, and its leases keep two apps off one session."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest

from crawlkeeper.app import App
from crawlkeeper.config import load_config
from crawlkeeper.plugins import create_plugin_manager, register
from crawlkeeper.testing import FakeBrowser

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SITE = "https://example.com"
CANARY = "CANARY-redis-0b7d"


def guide_block() -> str:
    guide = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    return next(b for b in re.findall(r"```python\n(.*?)```", guide, re.S)
                if b.startswith("# crawlkeeper_redisstore/__init__.py"))


@pytest.fixture
def plugin_module(tmp_path: Path) -> Any:
    block = guide_block()
    assert len(block.strip().splitlines()) < 40, "the guide promises a store plugin in under 40 lines"
    path = tmp_path / "crawlkeeper_redisstore.py"
    path.write_text(block, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("crawlkeeper_redisstore", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _resolver(host: str, port: int) -> list[str]:
    return ["93.184.215.14"]


def make_app(folder: Path, plugin: Any) -> App:
    config = load_config(folder / "crawlkeeper.toml")
    config.settings.sessions.key_file = folder / "state.key"
    browser = FakeBrowser()
    browser.add_page(f"{SITE}/*", "<html><head><title>Home</title></head><body><p>Welcome.</p></body></html>")
    browser.add_page(f"{SITE}/private", "<title>Private</title><p>secret</p>", requires_cookie="sid",
                     login_url="/login")
    pm = create_plugin_manager(["statefile"])
    register(pm, plugin, "redisstore")
    app = App(config, pm, backend=browser, resolver=_resolver)
    app.configure()
    return app


@pytest.mark.anyio
async def test_the_guides_redis_store_saves_restores_and_leases(
    tmp_path: Path, redis_url: str, plugin_module: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRAWLKEEPER_REDIS_URL", redis_url)
    (tmp_path / "crawlkeeper.toml").write_text("", encoding="utf-8")
    first = make_app(tmp_path, plugin_module)
    assert first.keeper.store is not None and "Redis" in first.keeper.store.description
    await first.create_session(session_id="r", cookies=[{"name": "sid", "value": CANARY, "url": SITE}])
    second = make_app(tmp_path, plugin_module)
    with pytest.raises(Exception, match="in use by another crawlkeeper process"):
        await second.crawl(f"{SITE}/private", session_id="r")
    await first.shutdown()
    result = await second.crawl(f"{SITE}/private", session_id="r")
    assert result["restored"] is True and result["final_url"] == f"{SITE}/private"
    import redis.asyncio as redis

    client = redis.from_url(redis_url)
    blob = await client.get("ck:state:local/r")
    assert blob and CANARY.encode() not in blob
    await second.close_session("r")
    assert await client.get("ck:state:local/r") is None
    await second.shutdown()
    await client.aclose()
