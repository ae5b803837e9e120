"""``crawlkeeper demo``: the README's main job, end to end on this machine.

It serves a small site with a login form on 127.0.0.1, starts ``crawlkeeper serve`` as a real stdio
subprocess, and drives it with the official MCP client: create a session, log in through the form, crawl
the private page as that user, list sessions (cookie names only), and show that a session-less crawl is
logged out.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from .testing.site import TestSite


def _config(folder: Path) -> Path:
    path = folder / "crawlkeeper.toml"
    path.write_text(
        '# Demo config: the local demo site lives on 127.0.0.1, which is refused unless allowed.\n'
        '[security]\nallow_private = ["127.0.0.1"]\n',
        encoding="utf-8",
    )
    (folder / "profiles").mkdir(exist_ok=True)
    return path


def _show(title: str, data: Any) -> None:
    click.secho(f"\n== {title}", bold=True)
    click.echo(data if isinstance(data, str) else json.dumps(data, indent=2))


async def run_demo(config_path: str | None = None) -> int:
    from mcp import Client, StdioServerParameters

    with TestSite() as site, tempfile.TemporaryDirectory(prefix="crawlkeeper-demo-") as tmp:
        env = {**os.environ, "CRAWLKEEPER_LOG_LEVEL": os.environ.get("CRAWLKEEPER_LOG_LEVEL", "WARNING")}
        if config_path:
            config = Path(config_path)  # made absolute by the CLI
            allowed = ["127.0.0.1"]
            try:
                from .config import load_config

                allowed += load_config(config).settings.security.allow_private
            except Exception as exc:
                raise click.ClickException(str(exc)) from None
            env["CRAWLKEEPER_SECURITY__ALLOW_PRIVATE"] = json.dumps(allowed)  # env beats the file
        else:
            config = _config(Path(tmp))
        from .runtime import build_app

        # A bad config, CRAWLKEEPER_* variable or plugin name is reported here, not by a server dying mid-demo.
        build_app(config)
        params = StdioServerParameters(
            command=sys.executable,
            args=["-m", "crawlkeeper", "serve", "--config", str(config)],
            env=env,
        )
        click.echo(f"demo site on {site.base_url}; starting `crawlkeeper serve` over stdio ...")
        started = time.perf_counter()
        async with Client(params) as client:
            tools = await client.list_tools()
            _show(f"connected in {time.perf_counter() - started:.2f} s; tools",
                  ", ".join(t.name for t in tools.tools))

            async def call(name: str, args: dict[str, Any]) -> dict[str, Any]:
                result = await client.call_tool(name, args)
                if result.is_error:
                    raise click.ClickException(f"{name} failed: {result.content[0].text}")
                return result.structured_content or {}

            session = await call("create_session", {"session_id": "alice", "url": site.url("/login")})
            _show("create_session", session)
            login_js = (
                "document.querySelector('#username').value = 'alice';"
                "document.querySelector('#password').value = 'wonderland';"
                "document.querySelector('#submit').click();"
            )
            login = await call("crawl_url", {"url": site.url("/login"), "session_id": "alice", "js_code": login_js})
            _show("crawl_url /login as alice, js_code filling and submitting the form",
                  f"ended on {login['final_url']} (status {login['status']})")
            private = await call("crawl_url", {"url": site.url("/private"), "session_id": "alice",
                                               "css_selector": "#welcome, h1"})
            _show(f"crawl_url {private['final_url']} as alice (status {private['status']})", private["content"])
            _show("list_sessions (cookie names only, never values)", await call("list_sessions", {}))
            anonymous = await call("crawl_url", {"url": site.url("/private"), "output": "text",
                                                 "css_selector": "h1"})
            _show("the same page without a session (logged out)",
                  f"{anonymous['final_url']}: {anonymous['content'].strip()}")
            await call("close_session", {"session_id": "alice"})
            ok = "Welcome, alice!" in private["content"] and "/login" in anonymous["final_url"]
        click.secho("\ndemo " + ("succeeded" if ok else "FAILED"), fg="green" if ok else "red", bold=True)
        return 0 if ok else 1
