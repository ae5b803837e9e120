"""Durable sessions with real Chromium and real `crawlkeeper serve` processes over stdio: a login survives a
restart (cookies incl. HttpOnly session cookies, localStorage, IndexedDB, sessionStorage), two servers never
drive one session, `kill -9` of a server mid-call loses only unsaved changes (its session is restored, logged in,
by another server), a killed Chromium is recovered from saved state."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import anyio
import psutil
import pytest

from crawlkeeper.testing.site import TestSite

from helpers import RawServer, browsers, descendants, mcp_server, write_config
from sites import ExtraSite

pytestmark = pytest.mark.integration

FILL_AND_SUBMIT = [
    "document.querySelector('#username').value = 'alice';",
    "document.querySelector('#password').value = 'wonderland';",
    "document.querySelector('#submit').click();",
]
SET_STORAGE = [
    "localStorage.setItem('lk', 'local-value'); sessionStorage.setItem('sk', 'session-value');",
    "await new Promise(done => { const r = indexedDB.open('db', 1);"
    " r.onupgradeneeded = () => r.result.createObjectStore('s');"
    " r.onsuccess = () => { const tx = r.result.transaction('s', 'readwrite');"
    " tx.objectStore('s').put('idb-value', 'k'); tx.oncomplete = done; }; r.onerror = done; });",
]
READ_STORAGE = [
    "document.body.insertAdjacentHTML('beforeend', '<p>LS=' + localStorage.getItem('lk') + ' SS=' +"
    " sessionStorage.getItem('sk') + '</p>');",
    "await new Promise(done => { const r = indexedDB.open('db', 1); r.onsuccess = () => {"
    " try { const q = r.result.transaction('s').objectStore('s').get('k'); q.onsuccess = () => {"
    " document.body.insertAdjacentHTML('beforeend', '<p>IDB=' + q.result + '</p>'); done(); }; }"
    " catch (e) { document.body.insertAdjacentHTML('beforeend', '<p>IDB=none</p>'); done(); } }; r.onerror = done; });",
]


def identity_provider(app: TestSite) -> ExtraSite:
    """Another origin a login passes through: it keeps its own token in localStorage, then sends the page back
    to the app, as an OAuth provider does (the call ends on the app's origin)."""
    idp = ExtraSite()
    idp.page("/authorize", "<html><body><p>signing in</p><script>localStorage.setItem('idp', 'idp-token');"
             f" setTimeout(() => location.replace({app.url('/')!r}), 50);</script></body></html>")
    idp.page("/show", "<html><body><p id='t'>?</p><script>document.getElementById('t').textContent ="
             " 'IDP=' + localStorage.getItem('idp');</script></body></html>")
    return idp


def files_under(*roots: Path) -> list[Path]:
    return [p for root in roots if root.exists() for p in root.rglob("*") if p.is_file()]


@pytest.mark.anyio
async def test_a_login_survives_a_restart_with_all_its_storage(tmp_path: Path, test_site: TestSite) -> None:
    with identity_provider(test_site) as idp:
        await _login_survives_a_restart(tmp_path, test_site, idp)


async def _login_survives_a_restart(tmp_path: Path, test_site: TestSite, idp: ExtraSite) -> None:
    config = write_config(tmp_path / "restart")
    async with mcp_server(config, log_name="first.log") as server:
        await server.ok("create_session", {"session_id": "gh", "url": test_site.url("/login")})
        await server.ok("crawl_url", {"session_id": "gh", "url": test_site.url("/login"), "js_code": FILL_AND_SUBMIT})
        await server.ok("crawl_url", {"session_id": "gh", "url": test_site.url("/"), "js_code": SET_STORAGE})
        # A call that passes through another origin and ends on the app: that origin's storage is saved too
        # (the end of a call reads only the page's own origin unless the call went elsewhere).
        back = await server.ok("crawl_url", {"session_id": "gh", "url": idp.url("/authorize"),
                                             "wait_for": f"js:() => location.port === '{test_site.port}'"})
        assert back["final_url"] == test_site.url("/")
        private = await server.ok("crawl_url", {"session_id": "gh", "url": test_site.url("/private")})
        assert "Welcome, alice!" in private["content"]
        assert private["restored"] is False
    # the client ended: the server exited and saved the session
    state = tmp_path / "restart" / "state"
    saved = [p for p in state.iterdir() if p.suffix == ".state"]
    assert len(saved) == 2  # the session and the key check
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for path in saved:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    async with mcp_server(config, log_name="second.log") as server:
        listed = (await server.ok("list_sessions"))["sessions"]
        assert [(s["session_id"], s["state"]) for s in listed] == [("gh", "hibernated")]
        assert {"name": "ck_session", "domain": "127.0.0.1"} in listed[0]["cookies"]
        private = await server.ok("crawl_url", {"session_id": "gh", "url": test_site.url("/private")})
        assert private["final_url"] == test_site.url("/private"), "the restored session is logged out"
        assert "Welcome, alice!" in private["content"]
        assert private["restored"] is True and private["note"]
        storage = await server.ok("crawl_url", {"session_id": "gh", "url": test_site.url("/"), "js_code": READ_STORAGE,
                                                "output": "text"})
        assert "LS=local-value" in storage["content"]
        assert "SS=session-value" in storage["content"]
        assert "IDB=idb-value" in storage["content"]
        other = await server.ok("crawl_url", {"session_id": "gh", "url": idp.url("/show"), "output": "text"})
        assert "IDP=idp-token" in other["content"], "the other origin's localStorage was not saved"
        again = await server.error("create_session", {"session_id": "gh"})
        assert "already exists" in again
    # no cookie value in plaintext anywhere: the store, the key, the logs, crawl4ai's cache
    values = list(test_site._sessions)  # every session token the site issued (the login's among them)
    assert values
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "crawlkeeper"
    for value in values:
        for path in files_under(tmp_path, cache):
            assert value.encode() not in path.read_bytes(), f"{path} holds a cookie value in plaintext"


@pytest.mark.anyio
async def test_two_servers_never_drive_one_session_and_kill_9_loses_nothing_saved(
    tmp_path: Path, test_site: TestSite
) -> None:
    config = write_config(tmp_path / "two")
    cookie = {"name": test_site.SESSION_COOKIE, "value": test_site.session_token("alice"), "url": test_site.url("/")}
    first = RawServer(config)  # its own process group: killed below as a crashed machine would kill it
    try:
        first.initialize()
        assert not first.call_tool("create_session", {"session_id": "shared", "cookies": [cookie]}).get("isError")
        async with mcp_server(config, log_name="b.log") as second:
            message = await second.error("crawl_url", {"session_id": "shared", "url": test_site.url("/private")})
            assert "session 'shared' is in use by another crawlkeeper process" in message
            assert "already exists" in await second.error("create_session", {"session_id": "shared"})
            listed = {s["session_id"] for s in (await second.ok("list_sessions"))["sessions"]}
            assert "shared" in listed
            # kill -9 of the first server (and its Chromium) while a call on the session runs: its lease dies
            # with it, and the state it saved is whole.
            first.send({"jsonrpc": "2.0", "id": 99, "method": "tools/call", "params": {
                "name": "crawl_url", "arguments": {"session_id": "shared", "url": test_site.url("/private")}}})
            await anyio.sleep(0.3)
            first.close()
            state = tmp_path / "two" / "state"
            assert {stat.S_IMODE(p.stat().st_mode) for p in state.iterdir() if p.suffix == ".state"} == {0o600}
            private = await second.ok("crawl_url", {"session_id": "shared", "url": test_site.url("/private")})
            assert "Welcome, alice!" in private["content"] and private["restored"] is True
            assert (await second.ok("close_session", {"session_id": "shared"}))["closed"] is True
    finally:
        first.close()
    left = [p.name for p in (tmp_path / "two" / "state").iterdir() if p.suffix == ".state"]
    assert left == [_keycheck_name()], "close_session must delete the saved state"


def _keycheck_name() -> str:
    from crawlkeeper.store import key_filename

    return key_filename("_crawlkeeper/keycheck") + ".state"


@pytest.mark.anyio
async def test_a_killed_chromium_is_recovered_from_saved_state(tmp_path: Path, test_site: TestSite) -> None:
    config = write_config(tmp_path / "crash")
    cookie = {"name": test_site.SESSION_COOKIE, "value": test_site.session_token("alice"), "url": test_site.url("/")}
    async with mcp_server(config) as server:
        await server.ok("create_session", {"session_id": "c", "cookies": [cookie]})
        first = await server.ok("crawl_url", {"session_id": "c", "url": test_site.url("/private")})
        assert "Welcome, alice!" in first["content"]
        for proc in browsers(descendants(server.process)):
            try:
                proc.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        await anyio.sleep(1.0)
        after = await server.ok("crawl_url", {"session_id": "c", "url": test_site.url("/private")})
        assert "Welcome, alice!" in after["content"], "the session came back logged out"
        assert after["restored"] is True and "crashed" in after["note"]
