"""Profiles against the real server: cookies by reference, crawl defaults, a broken file, and no leaked secrets."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest

from crawlkeeper.testing.site import TestSite

from helpers import Server, dump, mcp_server, write_config

pytestmark = pytest.mark.integration

CANARY = "canary-" + secrets.token_hex(8)

PROFILES = {
    "alice": """description = "Alice, logged in by her session cookie"
[[cookies]]
name = "ck_session"
value_env = "CK_TEST_ALICE_TOKEN"
domain = "127.0.0.1"
[[cookies]]
name = "ck_canary"
value_env = "CK_TEST_CANARY"
domain = "127.0.0.1"
""",
    "narrow": """description = "Only the list of links"
[crawl]
css_selector = "#links"
""",
    "broken": """description = "never loads"
[crawl
css_selector = "#links"
""",
}


@pytest.fixture(scope="module")
def alice_token(test_site: TestSite) -> str:
    return test_site.session_token("alice")


@pytest.fixture(scope="module")
async def server(
    tmp_path_factory: pytest.TempPathFactory, alice_token: str
) -> AsyncIterator[Server]:
    config = write_config(tmp_path_factory.mktemp("profiles"), profiles=PROFILES)
    env = {"CK_TEST_ALICE_TOKEN": alice_token, "CK_TEST_CANARY": CANARY}
    async with mcp_server(config, env=env, log_level="DEBUG") as srv:
        srv.facts["results"] = []
        yield srv


async def ok(server: Server, name: str, arguments: dict | None = None) -> dict:
    """Like ``server.ok``, keeping everything the client saw for the leak check at the end."""
    result = await server.call(name, arguments)
    server.facts["results"].append(dump(result))
    assert not result.is_error, dump(result)
    return result.structured_content


async def error(server: Server, name: str, arguments: dict) -> str:
    result = await server.call(name, arguments)
    server.facts["results"].append(dump(result))
    assert result.is_error, dump(result)
    return dump(result)


@pytest.mark.anyio
async def test_list_profiles(server: Server) -> None:
    profiles = {p["name"]: p["description"] for p in (await ok(server, "list_profiles"))["profiles"]}
    assert set(profiles) == {"alice", "narrow", "broken"}
    assert profiles["alice"] == "Alice, logged in by her session cookie"
    assert profiles["narrow"] == "Only the list of links"
    assert "broken.toml" in profiles["broken"]


@pytest.mark.anyio
async def test_profile_cookies_reach_the_site(server: Server, test_site: TestSite) -> None:
    cookies = await ok(server, "crawl_url", {"url": test_site.url("/cookies"), "profile": "alice", "output": "text"})
    assert "ck_session" in cookies["content"] and "ck_canary" in cookies["content"]
    private = await ok(server, "crawl_url", {"url": test_site.url("/private"), "profile": "alice"})
    assert private["final_url"] == test_site.url("/private")
    assert "Welcome, alice!" in private["content"] and "secret-page-for-alice" in private["content"]
    # The profile's cookies stay with the profile: a plain crawl is logged out.
    plain = await ok(server, "crawl_url", {"url": test_site.url("/cookies"), "output": "text"})
    assert "ck_session" not in plain["content"] and "ck_canary" not in plain["content"]


@pytest.mark.anyio
async def test_a_session_with_the_profile(server: Server, test_site: TestSite) -> None:
    created = await ok(server, "create_session", {"session_id": "with-alice", "profile": "alice",
                                                  "url": test_site.url("/private")})
    assert created["profile"] == "alice"
    assert created["url"] == test_site.url("/private"), "the profile's cookie did not log the session in"
    assert {c["name"] for c in created["cookies"]} == {"ck_session", "ck_canary"}
    listed = {s["session_id"]: s for s in (await ok(server, "list_sessions"))["sessions"]}
    assert listed["with-alice"]["profile"] == "alice"
    private = await ok(server, "crawl_url", {"url": test_site.url("/private"), "session_id": "with-alice"})
    assert "secret-page-for-alice" in private["content"]


@pytest.mark.anyio
async def test_profile_crawl_defaults_and_per_call_override(server: Server, test_site: TestSite) -> None:
    narrowed = await ok(server, "crawl_url", {"url": test_site.url("/links"), "profile": "narrow"})
    assert "Example docs" in narrowed["content"]
    assert "Five links stay" not in narrowed["content"]
    overridden = await ok(server, "crawl_url", {"url": test_site.url("/links"), "profile": "narrow",
                                                "css_selector": "p"})
    assert "Five links stay" in overridden["content"]
    assert "Example docs" not in overridden["content"]


@pytest.mark.anyio
async def test_a_broken_profile_is_an_error_naming_its_file(server: Server, test_site: TestSite) -> None:
    message = await error(server, "crawl_url", {"url": test_site.url("/links"), "profile": "broken"})
    assert "broken.toml" in message and "TOML" in message
    message = await error(server, "create_session", {"profile": "broken"})
    assert "broken.toml" in message
    message = await error(server, "crawl_url", {"url": test_site.url("/links"), "profile": "nosuch"})
    assert "unknown profile 'nosuch'" in message and "alice" in message and "narrow" in message
    # The other profiles still work.
    still = await ok(server, "crawl_url", {"url": test_site.url("/links"), "profile": "narrow"})
    assert "Example docs" in still["content"]


@pytest.mark.anyio
async def test_secret_values_never_reach_a_result_or_the_log(server: Server, alice_token: str) -> None:
    """Runs last: checks every result of this module and the whole DEBUG log."""
    seen = server.facts["results"]
    assert len(seen) >= 10
    log = server.log()
    assert " DEBUG " in log, "the server did not log at DEBUG: the log check below would prove little"
    for secret in (CANARY, alice_token):
        assert not [r for r in seen if secret in r]
        assert secret not in log
