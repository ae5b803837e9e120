"""Building an :class:`App` from the config, and running the stdio server with orderly signal handling."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from .app import App
from .config import Config, load_config
from .plugins import check_plugin_names, create_plugin_manager

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
    check_plugin_names(pm, config)
    app = App(config, pm, **kwargs)
    app.configure()
    return app


def serve_stdio(app: App) -> None:
    """Serve MCP on stdin/stdout until stdin closes or SIGTERM/SIGINT/SIGHUP; then shut down in order."""

    def make_server() -> Any:
        from .server import build_server

        # The app is started and shut down here, not in the server's lifespan: after a signal the SDK's stdin
        # reader stays blocked in a thread until the client writes or closes stdin, so the serving task may
        # never finish, and the shutdown must not wait for it.
        return build_server(app, owns_app=False)

    async def main() -> None:
        # With warmup = "early" Chromium is launched first: its driver and browser start in other processes, on
        # the second core, while this process imports the MCP SDK (most of the time before `initialize` can be
        # answered) in a thread. On a busy machine that CPU is not free and initialize waits longer: "launch"
        # (the default) launches once initialize is answered, beside the crawl4ai import.
        if app.config.settings.browser.warmup == "early":
            log.info("launching the browser early, while the MCP SDK imports (warmup = \"early\")")
            await app.launch_early()
        try:
            server = await asyncio.to_thread(make_server)
            from .server import SHUTDOWN_BUDGET_S  # imported by now
        except BaseException:
            await asyncio.shield(app.shutdown())  # no browser outlives a server that could not be built
            raise
        loop = asyncio.get_running_loop()
        signalled = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            try:
                loop.add_signal_handler(sig, signalled.set)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix
                pass
        # The SDK diverts fd 1 only while it serves (and finds the wire through sys.stdout, which must stay
        # untouched then): prints from a plugin's startup or shutdown hook are sent to stderr explicitly.
        with contextlib.redirect_stdout(sys.stderr):
            await app.startup(warm_up=False)  # the server starts it once initialize was answered
        serving = asyncio.ensure_future(server.run_stdio_async())
        waiting = asyncio.ensure_future(signalled.wait())
        try:
            await asyncio.wait({serving, waiting}, return_when=asyncio.FIRST_COMPLETED)
            if not serving.done():
                log.info("signal received: shut down")
                serving.cancel()  # in-flight calls end before their sessions close
                await asyncio.wait({serving}, timeout=0.2)
        finally:
            waiting.cancel()
            try:
                with contextlib.redirect_stdout(sys.stderr):
                    await asyncio.wait_for(asyncio.shield(app.shutdown()), SHUTDOWN_BUDGET_S)
            except asyncio.TimeoutError:
                log.error("shutdown took longer than %.1f s; exiting anyway", SHUTDOWN_BUDGET_S)
        if not serving.done():
            # Only the SDK's stdin reader is left, blocked in its thread; asyncio.run would wait for it forever.
            logging.shutdown()
            os._exit(0)
        if not serving.cancelled():
            serving.result()  # an error while serving is not swallowed

    asyncio.run(main())
