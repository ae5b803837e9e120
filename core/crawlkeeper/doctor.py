"""``crawlkeeper doctor``: is the config valid, do the plugins load, is there a browser and does it launch?"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import click

from .errors import CrawlkeeperError, first_line


def _line(ok: bool | None, what: str, detail: str = "", fix: str = "") -> None:
    mark = {True: "ok  ", False: "FAIL", None: "warn"}[ok]
    click.echo(f"[{mark}] {what}" + (f": {detail}" if detail else ""))
    if fix:
        click.echo(f"       fix: {fix}")


def run_doctor(config_path: str | None) -> int:
    """Print one line per check with a fix for each failure; return the exit code (0 when all passed)."""
    from .config import load_config
    from .plugins import check_plugin_names, create_plugin_manager

    failures = 0
    try:
        config = load_config(config_path)
        _line(True, "config", config.origin)
    except CrawlkeeperError as exc:
        _line(False, "config", str(exc), "correct the file or key named above")
        return 1
    try:
        pm = create_plugin_manager(config.disabled_plugins)
        check_plugin_names(pm, config)
        from .app import App

        app = App(config, pm)
        app.configure()
        loaded = [i.name for i in pm.describe() if not i.disabled]
        disabled = [i.name for i in pm.describe() if i.disabled]
        _line(True, "plugins", ", ".join(loaded) + (f" (disabled: {', '.join(disabled)})" if disabled else ""))
    except CrawlkeeperError as exc:
        _line(False, "plugins", str(exc), "disable the plugin with CRAWLKEEPER_DISABLE_PLUGINS=<name> or fix it")
        return 1
    store = app.keeper.store
    if store is None:
        _line(None, "saved sessions", "off: no state store (statefile disabled, no replacement); sessions live "
              "in memory only and end with the server", "enable the statefile plugin to keep logins across restarts")
    else:
        _line(True, "saved sessions", f"{getattr(store, 'description', type(store).__name__)}")
    problems = {p.name: app.profile_problem(p) for p in app.profiles.all()}
    broken = [name for name, problem in problems.items() if problem]
    _line(not broken if problems else None, "profiles",
          f"{len(problems)} in {config.profiles_dir}" + (f", {len(broken)} broken" if broken else ""))
    for name in broken:
        click.echo(f"       broken: {name}: {problems[name]}")
    if broken:
        click.echo("       fix: correct the file and key named above; `crawlkeeper profiles` checks them again")
    failures += bool(broken)
    unscoped = [p.name for p in app.profiles.all() if not p.error and holds_secrets(p)
                and not (p.security or {}).get("allowed_domains")]
    if unscoped:
        _line(None, "profile scope",
              f"{', '.join(unscoped)} hold secrets (cookies, credential headers or a login) but no [security] "
              "allowed_domains: their sessions may be sent to any host, where a hostile page or an open redirect "
              "can reach for them",
              "add [security] allowed_domains = [\"your-site.example\"] to each of these profiles")
    endpoints = config.settings.browser.fleet()
    if endpoints:
        return 1 if (failures + _check_endpoints(endpoints)) else 0
    candidate = getattr(app.backend, "candidate", None)
    if candidate is None or candidate.problem:
        _line(False, "browser", candidate.problem if candidate else "unknown backend",
              "install Chromium (`sudo apt-get install chromium`) or set [browser] executable_path")
        return 1
    _line(True, "browser found", f"{candidate.path} (from {candidate.source})")

    async def launch() -> float:
        started = time.perf_counter()
        try:
            await app.startup()
            await app.gate.ensure_browser(app.policy)
            context = await app.backend.new_context(app.context_options(_blank_request()))
            await context.close()
        finally:
            await app.shutdown()
        return time.perf_counter() - started

    try:
        seconds = asyncio.run(launch())
        _line(True, "browser launches", f"in {seconds:.1f} s, headless={config.settings.browser.headless}")
    except Exception as exc:
        _line(False, "browser launches", first_line(exc),
              "check the binary runs: `<path> --headless --no-sandbox --dump-dom about:blank`; on a server without "
              "a display keep headless = true")
        failures += 1
    return 1 if failures else 0


def _check_endpoints(endpoints: list[Any]) -> int:
    """One line per remote browser: reachable, its version, connect time and a round trip (a new context).
    Returns the number that failed."""
    from .endpoints import probe

    async def probe_all() -> list[Any]:
        return list(await asyncio.gather(*(probe(e, timeout_s=10) for e in endpoints)))

    results = asyncio.run(probe_all())
    failed = 0
    for found in results:
        protocol = "Playwright" if found.endpoint.protocol == "playwright" else "CDP"
        where = f"endpoint {found.endpoint.name} ({protocol})"
        if found.ok:
            limit = found.endpoint.max_sessions
            _line(True, where, f"Chromium {found.version}, connect {found.connect_ms:.0f} ms, round trip "
                  f"{found.latency_ms:.0f} ms" + (f", max_sessions {limit}" if limit else ""))
        else:
            failed += 1
            _line(False, where, found.error, "start that browser server, or fix its URL/headers in [browser] "
                  "endpoints (a token goes in the URL or in headers)")
    if failed and failed < len(results):
        click.echo("       crawlkeeper still serves from the endpoints that answer; it retries the others with "
                   "back-off")
    return failed


def holds_secrets(profile: Any) -> bool:
    """Whether a profile carries something secret: cookies, an auth method, or a credential header."""
    from .headers import holds_credentials

    headers = (profile.browser or {}).get("extra_headers") or {}
    return bool(profile.cookies or profile.auth or (isinstance(headers, dict) and holds_credentials(headers)))


def _blank_request():  # type: ignore[no-untyped-def]
    from .models import CrawlRequest

    return CrawlRequest(url=None, profile=None, session=None, arguments={})


__all__ = ["asyncio", "run_doctor"]
