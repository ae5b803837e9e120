"""`crawlkeeper sessions` / `sessions delete|export|import` and `crawlkeeper login`'s refusals, on a store in a
temporary folder (saved sessions made by an app on the fake browser)."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from crawlkeeper.app import App
from crawlkeeper.cli import main
from crawlkeeper.plugins import create_plugin_manager
from crawlkeeper.runtime import build_app
from crawlkeeper.testing import FakeBrowser

SITE = "https://example.com"
CANARY = "CANARY-cli-91ab"


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "crawlkeeper.toml"
    path.write_text('[sessions]\nkey_file = "state.key"\n[plugins.statefile]\ndir = "state"\n', encoding="utf-8")
    (tmp_path / "profiles").mkdir()
    return path


async def _resolver(host: str, port: int) -> list[str]:
    return ["93.184.215.14"]


def make_app(config_file: Path) -> App:
    from crawlkeeper.config import load_config

    config = load_config(config_file)
    app = App(config, create_plugin_manager(config.disabled_plugins), backend=FakeBrowser(), resolver=_resolver)
    app.configure()
    return app


def save_session(config_file: Path, sid: str) -> None:
    async def run() -> None:
        app = make_app(config_file)
        await app.create_session(session_id=sid, cookies=[
            {"name": "login", "value": CANARY, "domain": "example.com", "path": "/", "expires": 2_000_000_000,
             "httpOnly": True}])
        await app.shutdown()

    asyncio.run(run())


def cli(*args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(main, list(args), input=input)


def test_list_export_delete_import_round_trip(config_file: Path, tmp_path: Path) -> None:
    save_session(config_file, "gh")
    listed = cli("sessions", "--config", str(config_file))
    assert listed.exit_code == 0, listed.output
    assert "gh" in listed.output and "hibernated" in listed.output and "cookie login (example.com)" in listed.output
    assert "cookie login (example.com) expires 20" in listed.output  # the login cookie's own expiry
    assert CANARY not in listed.output
    as_json = json.loads(cli("sessions", "--config", str(config_file), "--json").output)
    assert as_json["sessions"][0]["cookies"][0]["name"] == "login"

    out = tmp_path / "gh.json"
    exported = cli("sessions", "export", "gh", "--out", str(out), "--config", str(config_file))
    assert exported.exit_code == 0, exported.output
    assert "WARNING" in exported.stderr and "password" in exported.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    state = json.loads(out.read_text())
    assert state["cookies"][0]["value"] == CANARY and state["origins"] == []

    refused = cli("sessions", "import", "gh", str(out), "--config", str(config_file))
    assert refused.exit_code == 1 and "already exists" in refused.output + refused.stderr
    deleted = cli("sessions", "delete", "gh", "--config", str(config_file))
    assert deleted.exit_code == 0, deleted.output
    assert "no saved sessions" in cli("sessions", "--config", str(config_file)).output
    missing = cli("sessions", "delete", "gh", "--config", str(config_file))
    assert missing.exit_code == 1 and "no saved session 'gh'" in missing.stderr

    imported = cli("sessions", "import", "gh2", str(out), "--config", str(config_file))
    assert imported.exit_code == 0, imported.output + imported.stderr

    async def use() -> dict[str, Any]:
        app = make_app(config_file)
        app.backend.add_page(f"{SITE}/*", "<title>Home</title><p>hi</p>")  # type: ignore[attr-defined]
        try:
            result = await app.crawl(f"{SITE}/", session_id="gh2")
            cookies = await app.sessions.get("gh2").context.cookies()
            return result | {"jar": [c["name"] for c in cookies]}
        finally:
            await app.shutdown()

    used = asyncio.run(use())
    assert used["restored"] is True and used["jar"] == ["login"]


def test_delete_and_import_refuse_a_session_a_server_uses(config_file: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"cookies": [{"name": "x"}]}')
    result = cli("sessions", "import", "x", str(bad), "--config", str(config_file))
    assert result.exit_code == 1 and "cookie #1 needs name, value and domain" in result.stderr
    (tmp_path / "junk.json").write_text("not json")
    result = cli("sessions", "import", "x", str(tmp_path / "junk.json"), "--config", str(config_file))
    assert result.exit_code == 1 and "is not JSON" in result.stderr
    result = cli("sessions", "delete", "../etc", "--config", str(config_file))
    assert result.exit_code == 1 and "invalid session id" in result.stderr

    async def hold_and_try() -> tuple[Any, Any]:
        app = make_app(config_file)
        await app.create_session(session_id="busy")  # this "server" holds its lease
        try:
            listing = await asyncio.to_thread(cli, "sessions", "--config", str(config_file))
            deleting = await asyncio.to_thread(cli, "sessions", "delete", "busy", "--config", str(config_file))
            return listing, deleting
        finally:
            await app.shutdown()

    listing, deleting = asyncio.run(hold_and_try())
    assert "busy" in listing.output and "active" in listing.output
    assert deleting.exit_code == 1 and "in use by a running crawlkeeper server" in deleting.stderr


def test_login_without_a_display_says_what_to_do(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    result = cli("login", "gh", "https://example.com/login", "--config", str(config_file))
    assert result.exit_code == 1
    assert "needs a display" in result.stderr and "sessions export" in result.stderr


def test_without_a_store_the_commands_say_so(tmp_path: Path) -> None:
    path = tmp_path / "crawlkeeper.toml"
    path.write_text('[plugins]\ndisable = ["statefile"]\n', encoding="utf-8")
    result = cli("sessions", "--config", str(path))
    assert result.exit_code == 1 and "no state store" in result.stderr
    assert build_app(path).keeper.enabled is False


@pytest.mark.anyio
async def test_login_leaves_the_window_on_the_site_and_never_hibernates_it_under_the_person(
    config_file: Path,
) -> None:
    from crawlkeeper.statecli import login

    app = make_app(config_file)
    app.backend.add_page(f"{SITE}/login", "<html><title>Log in</title><body><form id='f'></form></body></html>")  # type: ignore[attr-defined]
    seen: dict[str, Any] = {}

    async def person() -> None:
        session = app.sessions.get("gh")
        seen["url"] = session.page.url  # what the window shows while the person logs in
        seen["hibernated"] = await app.hibernate(session)  # what housekeeping does to an idle session
        seen["lru"] = app.sessions.lru_idle()  # what making room under max_sessions would pick
        await session.context.add_cookies([{"name": "sid", "value": CANARY, "url": SITE}])

    created = await login(app, "gh", f"{SITE}/login", None, wait_for_person=person)
    assert seen == {"url": f"{SITE}/login", "hibernated": False, "lru": None}
    assert created["url"] == f"{SITE}/login" and created["cookie_names"] == ["sid"]
