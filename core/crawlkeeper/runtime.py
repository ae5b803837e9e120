"""Building an :class:`App` from the config, and running the stdio server with orderly signal handling."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

from .app import App
from .config import Config, load_config
from .plugins import create_plugin_manager

log = logging.getLogger("crawlkeeper")


def build_app(
    config_path: str | Path | None = None,
    *,
    config: Config | None = None,
    extra_plugins: list[tuple[str, object]] | None = None,
    **kwargs: Any,
) -> App:
    """Load the config, load the plugins, and configure an :class:`App` (no browser is started)."""
    config = config or load_config(config_path)
    pm = create_plugin_manager(config.disabled_plugins, extra_plugins=extra_plugins or [])
    app = App(config, pm, **kwargs)
    app.configure()
    return app


def serve_stdio(app: App) -> None:
    """Serve MCP on stdin/stdout until stdin closes or SIGTERM/SIGINT/SIGHUP; then shut down in order."""
    from .server import build_server

    server = build_server(app)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            try:
                loop.add_signal_handler(sig, task.cancel)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix
                pass
        try:
            await server.run_stdio_async()
        except asyncio.CancelledError:
            log.info("signal received: shut down")

    asyncio.run(main())
