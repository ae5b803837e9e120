"""The ``crawlkeeper`` command: serve, crawl, plugins, profiles, doctor, demo."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from . import __version__
from .errors import CrawlkeeperError
from .logs import setup_logging

F = TypeVar("F", bound=Callable[..., Any])


def config_option(fn: F) -> F:
    return click.option(
        "--config", "config_path", type=click.Path(dir_okay=False), default=None,
        help="Config file (default: $CRAWLKEEPER_CONFIG, ./crawlkeeper.toml, then the user config dir).",
    )(fn)


def fail(exc: BaseException, code: int = 2) -> None:
    click.echo(f"crawlkeeper: error: {exc}", err=True)
    sys.exit(code)


class _Main(click.Group):
    """Every command ends in a clear message, never a traceback, when its input (config file, environment
    variable, profile, plugin) is bad."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CrawlkeeperError as exc:
            fail(exc)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="crawlkeeper")
def main() -> None:
    """An MCP server that crawls the web through crawl4ai with real, authenticated browser sessions."""


@main.command()
@config_option
@click.option("--transport", type=click.Choice(["stdio", "http"]), default="stdio", show_default=True)
@click.option("--host", default=None, help="HTTP: address to bind (default: [server] host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="HTTP: port (default: [server] port, 8765).")
@click.option("--log-level", default=None, help="DEBUG, INFO, WARNING... (default: $CRAWLKEEPER_LOG_LEVEL or INFO)")
def serve(config_path: str | None, transport: str, host: str | None, port: int | None,
          log_level: str | None) -> None:
    """Serve MCP over stdio (logs go to stderr; stdout carries only the protocol), or over Streamable HTTP
    at http://HOST:PORT/mcp for many clients, each with a bearer token (see `crawlkeeper token`)."""
    setup_logging(log_level, default="INFO")
    from .runtime import build_app, serve_stdio

    if transport == "stdio" and (host or port is not None):
        fail(CrawlkeeperError("--host and --port are for --transport http"))
    try:
        app = build_app(config_path)
    except CrawlkeeperError as exc:
        fail(exc)
    if transport == "stdio":
        serve_stdio(app)
        return
    from .http import serve_http

    if not app.pm.hook.crawlkeeper_verify_token.get_hookimpls():
        fail(CrawlkeeperError(
            "no plugin verifies tokens (the built-in 'tokens' plugin is disabled and nothing replaces it): "
            "the HTTP transport is always authenticated; enable 'tokens' or install a verifier plugin"))
    serve_http(app, host=host, port=port)


@main.group()
def token() -> None:
    """Bearer tokens of HTTP clients (the built-in 'tokens' plugin): add, list, revoke."""


def _token_store(config_path: str | None) -> Any:
    from crawlkeeper_plugins.tokens import TokenStore

    from .config import load_config

    try:
        return TokenStore(load_config(config_path).tokens_file)
    except CrawlkeeperError as exc:
        fail(exc)


@token.command("add")
@config_option
@click.argument("name")
@click.option("--admin", is_flag=True, help="This client may list and close every client's sessions.")
def token_add(config_path: str | None, name: str, admin: bool) -> None:
    """Create a token for client NAME and print it once (only its hash is stored)."""
    store = _token_store(config_path)
    try:
        value = store.add(name, admin=admin)
    except CrawlkeeperError as exc:
        fail(exc)
    click.echo(f"token for '{name}'{' (admin)' if admin else ''} stored as a hash in {store.path}", err=True)
    click.echo("send it as 'Authorization: Bearer <token>'; it is shown only now:", err=True)
    click.echo(value)


@token.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def token_list(config_path: str | None, as_json: bool) -> None:
    """List clients: name, admin, created, last used (never tokens)."""
    from .sessions import iso

    store = _token_store(config_path)
    try:
        rows = store.list()
    except CrawlkeeperError as exc:
        fail(exc)
    if as_json:
        click.echo(json.dumps({"tokens": rows}, indent=2))
        return
    if not rows:
        click.echo(f"no tokens in {store.path} (add one with: crawlkeeper token add NAME)")
    for row in rows:
        used = iso(row["last_used_at"]) or "never"
        click.echo(f"{row['name']:<20} {'admin' if row['admin'] else 'client':<7} "
                   f"created {iso(row['created_at'])}  last used {used}")


@token.command("revoke")
@config_option
@click.argument("name")
def token_revoke(config_path: str | None, name: str) -> None:
    """Revoke NAME's token; a running server refuses it within a second."""
    store = _token_store(config_path)
    try:
        removed = store.revoke(name)
    except CrawlkeeperError as exc:
        fail(exc)
    if not removed:
        fail(CrawlkeeperError(f"no token named '{name}' (crawlkeeper token list shows them)"), 1)
    click.echo(f"revoked '{name}'", err=True)


@main.command()
@config_option
@click.argument("url")
@click.option("--profile", default=None, help="Profile to use.")
@click.option("--output", type=click.Choice(["markdown", "html", "text", "links"]), default="markdown")
@click.option("--css-selector", default=None, help="Only keep content inside this selector.")
@click.option("--timeout", "timeout_s", type=float, default=None, help="Seconds before giving up.")
def crawl(config_path: str | None, url: str, profile: str | None, output: str, css_selector: str | None,
          timeout_s: float | None) -> None:
    """Crawl URL and print its content to stdout."""
    setup_logging(default="WARNING")
    from .runtime import build_app

    async def run() -> None:
        app = build_app(config_path)
        await app.startup()
        try:
            result = await app.crawl(url, profile=profile, output=output, css_selector=css_selector,
                                     timeout_s=timeout_s, max_chars=1_000_000)
            parts = [result["content"]]
            while result["next_cursor"]:
                result = await app.crawl(url, cursor=result["next_cursor"], max_chars=1_000_000)
                parts.append(result["content"])
        finally:
            await app.shutdown()
        click.echo(f"# {result['title'] or url}  [{result['status']}] {result['final_url']}", err=True)
        click.echo("".join(parts))

    try:
        asyncio.run(run())
    except CrawlkeeperError as exc:
        fail(exc, 1)


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(config_path: str | None, as_json: bool) -> None:
    """List plugins: name, version, distribution, hooks, auth methods, disabled or not."""
    setup_logging(default="WARNING")
    from .runtime import build_app

    try:
        app = build_app(config_path)
    except CrawlkeeperError as exc:
        fail(exc)
    infos = app.pm.describe()
    for plugin, method in app.auth_methods.values():
        app.pm.info(plugin).auth_methods.append(method.name)
    rows = [
        {
            "name": i.name, "version": i.version, "distribution": i.distribution, "module": i.module,
            "builtin": i.builtin, "disabled": i.disabled, "hooks": i.hooks, "auth_methods": sorted(i.auth_methods),
        }
        for i in infos
    ]
    if as_json:
        click.echo(json.dumps({"plugins": rows}, indent=2))
        return
    for row in rows:
        state = "disabled" if row["disabled"] else "enabled"
        origin = f"{row['distribution']} {row['version']}" if row["distribution"] else (row["module"] or "?")
        kind = "built-in" if row["builtin"] else "third-party"
        click.echo(f"{row['name']:<16} {state:<8} {kind:<11} {origin}")
        if row["hooks"]:
            click.echo(f"{'':16} hooks: {', '.join(h.removeprefix('crawlkeeper_') for h in row['hooks'])}")
        if row["auth_methods"]:
            click.echo(f"{'':16} auth methods: {', '.join(row['auth_methods'])}")


@main.command()
@config_option
def profiles(config_path: str | None) -> None:
    """List and validate every profile; exit 1 when any is broken."""
    setup_logging(default="ERROR")
    from .runtime import build_app

    try:
        app = build_app(config_path)
    except CrawlkeeperError as exc:
        fail(exc)
    items = app.profiles.all()
    if not items:
        click.echo(f"no profiles (put <name>.toml files in {app.config.profiles_dir})")
    broken = 0
    for profile in items:
        problem = app.profile_problem(profile)  # incl. its [auth] table against its method (no login is run)
        if problem:
            broken += 1
            where = "" if problem.startswith(profile.source) or profile.label in problem else f"{profile.source}: "
            click.echo(f"BROKEN {profile.name:<20} {where}{problem}")
        else:
            click.echo(f"ok     {profile.name:<20} {profile.description}")
    if broken:
        click.echo(f"{broken} broken profile(s)", err=True)
        sys.exit(1)


@main.command()
@config_option
def doctor(config_path: str | None) -> None:
    """Check the config, the plugins and the browser, with a fix for each problem."""
    from .doctor import run_doctor

    setup_logging(default="ERROR")
    sys.exit(run_doctor(config_path))


def _run_on_store(config_path: str | None, work: Callable[[Any], Any], *, headless: bool = True) -> Any:
    """Build the app (no browser unless ``work`` needs one) and run ``work(app)``; errors end the command."""
    from .runtime import build_app

    try:
        app = build_app(config_path)
        if not headless:
            app.config.settings.browser.headless = False
            app.backend.headless = False  # type: ignore[attr-defined]
        return asyncio.run(work(app))
    except CrawlkeeperError as exc:
        fail(exc, 1)


@main.group(invoke_without_command=True)
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def sessions(ctx: click.Context, config_path: str | None, as_json: bool) -> None:
    """Saved sessions: list them (default), or delete, export, import one.

    Listing shows id, profile, state (active: a running server drives it; hibernated: saved), times, and cookie
    names, domains and expiry, never values."""
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path
    if ctx.invoked_subcommand is not None:
        return
    setup_logging("WARNING")
    from .statecli import list_saved

    rows = _run_on_store(config_path, list_saved)
    if as_json:
        click.echo(json.dumps({"sessions": rows}, indent=2))
        return
    if not rows:
        click.echo("no saved sessions")
    for row in rows:
        if row.get("error"):
            click.echo(f"{row['session_id']:<24} BROKEN  {row['error']}")
            continue
        who = "" if row["owner"] == "local" else f" owner={row['owner']}"
        click.echo(f"{row['session_id']:<24} {row['state']:<10}{who} profile={row['profile'] or '-'} "
                   f"created={row['created_at']} last_used={row['last_used_at']} expires={row['expires_at'] or '-'}")
        for cookie in row["cookies"]:
            click.echo(f"{'':26}cookie {cookie['name']} ({cookie['domain']}) expires "
                       f"{cookie['expires'] or 'with the browser session'}")


def _store_config(ctx: click.Context, config_path: str | None) -> str | None:
    return config_path or (ctx.obj or {}).get("config_path")


@sessions.command("delete")
@config_option
@click.argument("session_id")
@click.pass_context
def sessions_delete(ctx: click.Context, config_path: str | None, session_id: str) -> None:
    """Delete a saved session for good (refused while a running server uses it)."""
    setup_logging("WARNING")
    from .statecli import delete_saved

    _run_on_store(_store_config(ctx, config_path), lambda app: delete_saved(app, session_id))
    click.echo(f"deleted session '{session_id}'")


@sessions.command("export")
@config_option
@click.argument("session_id")
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True, help="File to write (made 0600).")
@click.pass_context
def sessions_export(ctx: click.Context, config_path: str | None, session_id: str, out: str) -> None:
    """Write a saved session as Playwright storage-state JSON (cookies with their values: a secret)."""
    setup_logging("WARNING")
    from pathlib import Path

    from .statecli import export_saved, write_secret_file

    data = _run_on_store(_store_config(ctx, config_path), lambda app: export_saved(app, session_id))
    write_secret_file(Path(out), data)
    click.echo(f"wrote {out} (0600). WARNING: it holds the login of session '{session_id}' in clear text (cookie "
               "values): anyone who reads it is logged in as you. Keep it like a password and delete it when "
               "done.", err=True)


@sessions.command("import")
@config_option
@click.argument("session_id")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--profile", default=None, help="Profile the session uses.")
@click.pass_context
def sessions_import(ctx: click.Context, config_path: str | None, session_id: str, file: str,
                    profile: str | None) -> None:
    """Save a new session from a Playwright storage-state JSON file (e.g. one `sessions export` wrote)."""
    setup_logging("WARNING")
    from pathlib import Path

    from .statecli import import_saved, read_storage_state

    try:
        storage = read_storage_state(Path(file))
    except CrawlkeeperError as exc:
        fail(exc, 1)
    _run_on_store(_store_config(ctx, config_path), lambda app: import_saved(app, session_id, storage, profile))
    click.echo(f"imported session '{session_id}' ({len(storage['cookies'])} cookies); agents can use it now")


@main.command()
@config_option
@click.argument("session_id")
@click.argument("url")
@click.option("--profile", default=None, help="Profile the session uses.")
def login(config_path: str | None, session_id: str, url: str, profile: str | None) -> None:
    """Log in by hand: opens URL in a visible browser as session SESSION_ID; log in (MFA included), then press
    Enter here or close the window. The session is saved, and any agent can use it by its id."""
    setup_logging(default="WARNING")
    from .statecli import has_display
    from .statecli import login as run_login

    if not has_display():
        fail(CrawlkeeperError(
            "crawlkeeper login needs a display for its browser window and there is none (DISPLAY is not set). Run "
            "it on a desktop; or log in there and move the session with `crawlkeeper sessions export ID --out F` "
            "and `crawlkeeper sessions import ID F` on this machine"), 1)

    async def wait_for_enter() -> None:
        await asyncio.to_thread(sys.stdin.readline)

    # Tests play the person through the browser's debugging connection (see login_debug_args for why it is
    # acceptable here, and only here). Checked before anything starts.
    port = os.environ.get("CRAWLKEEPER_LOGIN_DEBUG_PORT", "").strip()
    if port:
        from .launch import login_debug_args

        try:
            login_debug_args([], port)
        except ValueError as exc:
            fail(exc, 2)
        click.echo(f"warning: CRAWLKEEPER_LOGIN_DEBUG_PORT is set: any local process can drive this login window "
                   f"through 127.0.0.1:{port} while it is open (tests only; unset it)", err=True)

    def work(app: Any) -> Any:
        if port:
            from .launch import login_debug_args

            app.backend.extra_args = login_debug_args(app.backend.extra_args, port)
        click.echo(f"A browser window opens at {url}. Log in there, then press Enter here (or close the window).",
                   err=True)
        return run_login(app, session_id, url, profile, wait_for_person=wait_for_enter)

    result = _run_on_store(config_path, work, headless=False)
    names = ", ".join(result["cookie_names"]) or "none"
    click.echo(f"saved session '{session_id}' (cookies: {names}); use it with crawl_url(session_id=\"{session_id}\")")


@main.command()
@config_option
def demo(config_path: str | None) -> None:
    """Serve a local site, start `crawlkeeper serve` over stdio, log in and crawl through an MCP client.

    With --config, the server uses your config (127.0.0.1 is allowed on top of it, for the demo site)."""
    from .demo import run_demo

    setup_logging(default="WARNING")
    sys.exit(asyncio.run(run_demo(os.path.abspath(config_path) if config_path else None)))


if __name__ == "__main__":  # pragma: no cover
    main()
