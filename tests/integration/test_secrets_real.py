"""Issue 13's attacks, replayed against the real server (stdio, real Chromium) and two loopback sites: the
profile's own site on 127.0.0.1 and an "attacker" on 127.0.0.2, both allowed by the egress policy. Each test
failed before the fix (the figures are in the issue note)."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Iterator
from urllib.parse import quote

import pytest

from crawlkeeper.testing.site import TestSite

from helpers import Server, dump, mcp_server, write_config
from sites import ReposTestSite

pytestmark = pytest.mark.integration

TOKEN = "tok-" + secrets.token_hex(12)
LEAK = "leak-" + secrets.token_hex(12)
ALLOW_BOTH = '[security]\nallow_private = ["127.0.0.1", "127.0.0.2"]\n'


def profiles(site: TestSite) -> dict[str, str]:
    return {
        # The attack of issue 13: a secret cookie without url/domain used to follow the caller's URL.
        "unbound": '[[cookies]]\nname = "ck_session"\nvalue_env = "CK_ALICE"\n',
        # The same, bound to its site, with a bearer token by reference (scoped to the cookie's site).
        "work": f"""[[cookies]]
name = "ck_session"
value_env = "CK_ALICE"
domain = "{site.host}"
[browser]
extra_headers = {{ Authorization = {{ value_env = "CK_TOKEN" }}, "X-Trace" = "plain" }}
""",
        # A scoped API key and an open redirect on its own site (issue 13's last hole).
        "redirector": """[browser]
header_domains = ["127.0.0.1"]
extra_headers = { "X-Api-Key" = { value_env = "CK_TOKEN" } }
""",
        # A cookie a script may read (httpOnly = false): its value must still never reach the model.
        "readable": f"""[[cookies]]
name = "ck_leak"
value_env = "CK_LEAK"
domain = "{site.host}"
httpOnly = false
[[cookies]]
name = "ck_hidden"
value_env = "CK_LEAK"
domain = "{site.host}"
""",
    }


@pytest.fixture(scope="module")
def attacker() -> Iterator[TestSite]:
    with ReposTestSite(host="127.0.0.2") as site:
        yield site


@pytest.fixture(scope="module")
async def server(
    tmp_path_factory: pytest.TempPathFactory, test_site: TestSite, attacker: TestSite
) -> AsyncIterator[Server]:
    config = write_config(tmp_path_factory.mktemp("secrets"), profiles=profiles(test_site))
    config.write_text(ALLOW_BOTH + 'js_code = "allow"\n', encoding="utf-8")
    env = {"CK_ALICE": test_site.session_token("alice"), "CK_TOKEN": TOKEN, "CK_LEAK": LEAK}
    async with mcp_server(config, env=env, log_level="DEBUG") as srv:
        yield srv


def wait_for(site: TestSite, path: str, timeout: float = 3.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hits = [r for r in list(site.requests) if r["path"] == path]
        if hits:
            return hits
        time.sleep(0.05)
    return []


@pytest.mark.anyio
async def test_profile_cookie_never_goes_to_the_callers_url(
    server: Server, test_site: TestSite, attacker: TestSite
) -> None:
    attacker.reset_records()
    message = await server.error("create_session", {"profile": "unbound", "url": attacker.url("/steal")})
    assert "unbound.toml" in message and "url or domain" in message
    created = await server.ok("create_session", {"profile": "work", "url": attacker.url("/steal")})
    assert created["url"] == attacker.url("/steal")
    stolen = [r for r in list(attacker.requests) if r["path"] in ("/steal", "/favicon.ico")]
    assert stolen, "the session never reached the attacker: the check below would prove nothing"
    for request in stolen:
        assert request["cookie_names"] == [] and "authorization" not in request["headers"], request
    await server.ok("close_session", {"session_id": created["session_id"]})


@pytest.mark.anyio
async def test_third_party_image_on_the_profiles_site_gets_no_authorization(
    server: Server, test_site: TestSite, attacker: TestSite
) -> None:
    attacker.reset_records()
    test_site.reset_records()
    created = await server.ok("create_session", {"profile": "work"})
    page = await server.ok("crawl_url", {
        "session_id": created["session_id"], "url": test_site.url(f"/subresources?target={attacker.url('/img')}")})
    assert page["status"] == 200
    [own] = [r for r in list(test_site.requests) if r["path"] == "/subresources"]
    assert own["headers"].get("authorization") == "<redacted>" and own["headers"].get("x-trace") == "plain"
    assert own["cookie_names"] == ["ck_session"]
    third = wait_for(attacker, "/img")
    assert len(third) >= 2, f"the page's img/fetch never reached the third party: {list(attacker.requests)}"
    for request in third:
        assert "authorization" not in request["headers"] and "x-trace" not in request["headers"], request
        assert request["cookie_names"] == []
    await server.ok("close_session", {"session_id": created["session_id"]})


def _keys(site: TestSite, path: str) -> list[str | None]:
    return [r["headers"].get("x-api-key") for r in list(site.requests) if r["path"] == path]


@pytest.mark.anyio
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_open_redirect_on_the_profiles_site_does_not_forward_its_header(
    server: Server, test_site: TestSite, attacker: TestSite, status: int
) -> None:
    """Before: Playwright re-applied the route-added header to every redirect hop, so the key reached
    127.0.0.2 on all five statuses, and a redirect back into scope went without it."""
    test_site.reset_records()
    attacker.reset_records()
    out = test_site.url(f"/redirect?status={status}&to={attacker.url('/landing')}")
    page = await server.ok("crawl_url", {"url": out, "profile": "redirector"})
    assert page["final_url"] == attacker.url("/landing")
    assert _keys(test_site, "/redirect") == [TOKEN]  # the header reached its own site...
    assert _keys(attacker, "/landing") == [None]  # ...and not the host the open redirect chose
    # In scope -> the other host -> back in scope: the last hop gets the key again.
    test_site.reset_records()
    attacker.reset_records()
    back = attacker.url(f"/redirect?status={status}&to={test_site.url('/tiny')}")
    page = await server.ok("crawl_url", {"url": test_site.url(f"/redirect?status={status}&to={quote(back)}"),
                                         "profile": "redirector"})
    assert page["final_url"] == test_site.url("/tiny")
    assert _keys(attacker, "/redirect") == [None]
    assert _keys(test_site, "/redirect") == [TOKEN] and _keys(test_site, "/tiny") == [TOKEN]
    assert TOKEN not in str(page)


@pytest.mark.anyio
async def test_js_code_reading_cookies_returns_no_secret(server: Server, test_site: TestSite) -> None:
    """Even with [security] js_code = "allow": an HttpOnly profile cookie is invisible to scripts, and a
    readable one comes back as *** wherever the page puts it."""
    created = await server.ok("create_session", {"profile": "readable"})
    js = ("document.body.insertAdjacentHTML('beforeend', '<p id=\"jar\">jar: ' + document.cookie + ' end</p>');"
          "document.title = 'jar ' + document.cookie;")
    result = await server.call("crawl_url", {"session_id": created["session_id"], "url": test_site.url("/tiny"),
                                             "js_code": js, "output": "html"})
    shown = dump(result)
    assert not result.is_error, shown
    assert "ck_leak=***" in shown, "the script did not run or the cookie was not readable: nothing was proven"
    assert "ck_hidden" not in shown  # HttpOnly by default
    assert LEAK not in shown and LEAK not in server.log()
    await server.ok("close_session", {"session_id": created["session_id"]})


@pytest.mark.anyio
async def test_default_policy_refuses_js_code_where_secrets_live(
    tmp_path_factory: pytest.TempPathFactory, test_site: TestSite
) -> None:
    config = write_config(tmp_path_factory.mktemp("secrets-default"), profiles=profiles(test_site))
    config.write_text(ALLOW_BOTH, encoding="utf-8")
    env = {"CK_ALICE": test_site.session_token("alice"), "CK_TOKEN": TOKEN, "CK_LEAK": LEAK}
    async with mcp_server(config, env=env) as srv:
        created = await srv.ok("create_session", {"profile": "readable"})
        message = await srv.error("crawl_url", {"session_id": created["session_id"], "url": test_site.url("/tiny"),
                                                "js_code": "document.cookie"})
        assert "[security] js_code" in message and "no-secrets" in message
        plain = await srv.ok("crawl_url", {"url": test_site.url("/tiny"), "js_code": "1", "output": "html"})
        assert plain["status"] == 200
