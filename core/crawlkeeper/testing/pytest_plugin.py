"""pytest fixtures for crawlkeeper plugin authors (loaded through the ``pytest11`` entry point).

- ``crawlkeeper_browser``: a :class:`~crawlkeeper.testing.FakeBrowser` (canned pages, no Chromium).
- ``crawlkeeper_config``: a config in a temporary folder (``crawlkeeper_config.profiles_dir`` for profiles);
  override this fixture, or use ``crawlkeeper_config_toml``, to change settings.
- ``crawlkeeper_app``: the application wired to the fake browser, built-in and installed plugins loaded.
- ``crawlkeeper_register``: ``crawlkeeper_register(plugin, name=None)`` registers a plugin for one test.
- ``crawlkeeper_client``: ``async with crawlkeeper_client() as client:`` an in-memory MCP client
  (``mcp.Client``) connected to the app; tool calls go through the real MCP layer.

The fixtures are hermetic: no ``CRAWLKEEPER_*`` environment variable and no config file of the user's reaches
them (the config is read from the test's own folder; the plugin manager ignores ``CRAWLKEEPER_DISABLE_PLUGINS``,
``CRAWLKEEPER_LOAD_PLUGINS`` and ``CRAWLKEEPER_TRACE_PLUGINS``).

Async tests run with anyio's pytest plugin (installed with mcp): mark them ``@pytest.mark.anyio``. This plugin
does not choose anyio's backend for you (a pytest plugin must not override fixtures it does not own): to run
only on asyncio, put ``@pytest.fixture def anyio_backend(): return "asyncio"`` in your ``conftest.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from ..config import Config, load_config
from .fake import FakeBrowser


async def _fake_resolver(host: str, port: int) -> list[str]:
    """Every name resolves to a public documentation-range address: the fake never connects anywhere."""
    return ["93.184.215.14"]


@pytest.fixture
def crawlkeeper_config_toml() -> str:
    """Extra TOML appended to the test config (override to change settings)."""
    return ""


@pytest.fixture
def crawlkeeper_config(tmp_path: Path, crawlkeeper_config_toml: str) -> Config:
    folder = tmp_path / "crawlkeeper"
    (folder / "profiles").mkdir(parents=True)
    path = folder / "crawlkeeper.toml"
    path.write_text(crawlkeeper_config_toml, encoding="utf-8")
    config = load_config(path, environ={})  # hermetic: the user's CRAWLKEEPER_* variables never leak in
    # Saved sessions and their key stay in the test's folder, never in the user's data or config dirs.
    extra = config.settings.plugins.model_extra
    if extra is not None and "dir" not in extra.setdefault("statefile", {}):
        extra["statefile"]["dir"] = str(folder / "state")
    if config.settings.sessions.key_file is None:
        config.settings.sessions.key_file = folder / "state.key"
    return config


@pytest.fixture
def crawlkeeper_browser() -> FakeBrowser:
    return FakeBrowser()


@pytest.fixture
def crawlkeeper_app(crawlkeeper_config: Config, crawlkeeper_browser: FakeBrowser) -> Iterator[Any]:
    from ..app import App
    from ..plugins import create_plugin_manager

    pm = create_plugin_manager(crawlkeeper_config.disabled_plugins, environ={})
    app = App(crawlkeeper_config, pm, backend=crawlkeeper_browser, resolver=_fake_resolver)
    app.configure()
    yield app


@pytest.fixture
def crawlkeeper_register(crawlkeeper_app: Any) -> Iterator[Callable[..., Any]]:
    from ..plugins import register

    added: list[object] = []

    def add(plugin: object, name: str | None = None) -> object:
        name = name or getattr(plugin, "__name__", type(plugin).__name__)
        pm = crawlkeeper_app.pm
        # The plugin under test is often installed (pip install -e .) and so already loaded from its entry
        # point: the test's registration replaces it instead of failing with pluggy's "already registered".
        for old in (pm.get_plugin(name), plugin if pm.is_registered(plugin) else None):
            if old is not None and pm.is_registered(old):
                pm.unregister(old)
        if pm.is_blocked(name):
            raise pytest.UsageError(
                f"crawlkeeper_register: plugin '{name}' is disabled by [plugins] disable in the test config "
                f"({crawlkeeper_app.config.origin}); remove it from crawlkeeper_config_toml to register it")
        register(pm, plugin, name)
        added.append(plugin)
        crawlkeeper_app.configure_plugins()
        return plugin

    yield add
    for plugin in added:
        if crawlkeeper_app.pm.is_registered(plugin):
            crawlkeeper_app.pm.unregister(plugin)


@pytest.fixture
def crawlkeeper_client(crawlkeeper_app: Any) -> Callable[[], Any]:
    from mcp import Client

    from ..server import build_server

    @asynccontextmanager
    async def connect() -> AsyncIterator[Any]:
        async with Client(build_server(crawlkeeper_app)) as client:
            yield client

    return connect
