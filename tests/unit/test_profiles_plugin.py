"""The built-in ``profiles`` plugin (TOML files in ``[profiles] dir``) and the core's profile store."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from support import error_text, shown

from crawlkeeper import PROFILE_LAYER_PRIORITY, ConfigError, ConfigLayer, CrawlRequest, Profile, hookimpl

SITE = "https://example.com"
CANARY = "CANARY-PROFILE-4b9e1c"
INLINE_SECRET = "inline-secret-0c3d"

WORK = f"""
description = "Work account"

[crawl]
output = "html"
max_chars = 5000

[[cookies]]
name = "work_sid"
value_env = "CK_TEST_WORK_SID"
domain = "example.com"
path = "/"

[[cookies]]
name = "pref"
value = "{INLINE_SECRET}"
url = "{SITE}/"
"""

PLAIN = """
description = "No login, text output"

[crawl]
output = "text"
"""


@pytest.fixture
def site(crawlkeeper_browser: Any) -> Any:
    crawlkeeper_browser.add_page(
        f"{SITE}/*", "<html><head><title>Profiled</title></head><body><p>Profiled page.</p></body></html>"
    )
    return crawlkeeper_browser


@pytest.fixture
def profiles(write_profile: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    monkeypatch.setenv("CK_TEST_WORK_SID", CANARY)
    write_profile("work", WORK)
    write_profile("plain", PLAIN)
    return write_profile


# -- listing and using ---------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_list_profiles_shows_names_and_descriptions_only(
    crawlkeeper_client: Callable[..., Any], profiles: Any
) -> None:
    async with crawlkeeper_client() as client:
        result = await client.call_tool("list_profiles", {})
    assert result.structured_content == {
        "profiles": [
            {"name": "plain", "description": "No login, text output"},
            {"name": "work", "description": "Work account"},
        ]
    }
    assert CANARY not in shown(result)
    assert INLINE_SECRET not in shown(result)


@pytest.mark.anyio
async def test_profile_cookies_reach_the_context_and_never_leak(
    crawlkeeper_client: Callable[..., Any], crawlkeeper_app: Any, profiles: Any, site: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with crawlkeeper_client() as client:
        created = await client.call_tool("create_session", {"session_id": "w", "profile": "work", "url": f"{SITE}/"})
        assert not created.is_error, shown(created)
        assert created.structured_content["profile"] == "work"
        jar = {c["name"]: c for c in crawlkeeper_app.sessions.get("w").context.jar}
        assert jar["work_sid"]["value"] == CANARY
        assert jar["pref"]["value"] == INLINE_SECRET
        assert {(c["name"], c["domain"]) for c in created.structured_content["cookies"]} == {
            ("work_sid", "example.com"), ("pref", "example.com")}
        listing = await client.call_tool("list_sessions", {})
        assert listing.structured_content["sessions"][0]["profile"] == "work"
        crawled = await client.call_tool("crawl_url", {"url": f"{SITE}/x", "session_id": "w"})
        assert not crawled.is_error
        # a session-less crawl with a cookie profile runs in a temporary session with the cookies
        temporary = await client.call_tool("crawl_url", {"url": f"{SITE}/y", "profile": "work"})
        assert not temporary.is_error, shown(temporary)
        assert temporary.structured_content["session_id"] is None
        profiles_listed = await client.call_tool("list_profiles", {})
    temp_context = crawlkeeper_app.backend.contexts[-1]
    assert "work_sid" in temp_context.cookie_names() and temp_context.closed
    for result in (created, listing, crawled, temporary, profiles_listed):
        assert CANARY not in shown(result)
        assert INLINE_SECRET not in shown(result)
    assert CANARY not in caplog.text
    assert INLINE_SECRET not in caplog.text


@pytest.mark.anyio
async def test_crawl_layer_applies_and_call_arguments_override_it(
    crawlkeeper_client: Callable[..., Any], profiles: Any, site: Any
) -> None:
    async with crawlkeeper_client() as client:
        plain = await client.call_tool("crawl_url", {"url": f"{SITE}/", "profile": "plain"})
        assert plain.structured_content["output"] == "text"
        overridden = await client.call_tool("crawl_url", {"url": f"{SITE}/", "profile": "plain", "output": "html"})
        assert overridden.structured_content["output"] == "html"
        assert "<p>Profiled page.</p>" in overridden.structured_content["content"]
        await client.call_tool("create_session", {"session_id": "w", "profile": "work"})
        in_session = await client.call_tool("crawl_url", {"url": f"{SITE}/", "session_id": "w"})
        assert in_session.structured_content["output"] == "html"  # the session's profile layer
        other = error_text(await client.call_tool(
            "crawl_url", {"url": f"{SITE}/", "session_id": "w", "profile": "plain"}))
        assert "keeps its profile" in other


@pytest.mark.anyio
async def test_unknown_profile_lists_the_available_ones(
    crawlkeeper_client: Callable[..., Any], profiles: Any, site: Any
) -> None:
    async with crawlkeeper_client() as client:
        for tool, args in (("crawl_url", {"url": f"{SITE}/"}), ("create_session", {})):
            message = error_text(await client.call_tool(tool, {**args, "profile": "nope"}))
            assert "unknown profile 'nope'" in message
            assert "plain, work" in message
    assert site.navigations == []


# -- broken profiles -----------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("description = \"x\"\n[crawl\noutput = 'html'\n", ["not valid TOML"]),
        ('[crawl]\ntimeout_s = "slow"\n', ["[crawl] timeout_s", "number"]),
        ('descripton = "typo"\n', ["descripton", "unknown key"]),
        ("[crawl]\nwait_forr = 'css:#x'\n", ["[crawl] wait_forr", "unknown key"]),
        ('[browser]\nexecutable_path = "/bin/sh"\n', ["[browser] executable_path", "server config"]),
        ('[[cookies]]\nname = "a"\n', ["cookies", "value_env"]),
    ],
)
async def test_broken_profile_is_an_error_naming_file_and_key_others_work(
    crawlkeeper_client: Callable[..., Any], profiles: Callable[..., Path], site: Any, text: str,
    expected: list[str],
) -> None:
    profiles("broken", text)
    async with crawlkeeper_client() as client:
        message = error_text(await client.call_tool("crawl_url", {"url": f"{SITE}/", "profile": "broken"}))
        assert "broken.toml" in message
        for part in expected:
            assert part in message
        listed = {p["name"]: p["description"] for p in
                  (await client.call_tool("list_profiles", {})).structured_content["profiles"]}
        assert listed["broken"].startswith("(broken)")
        assert listed["work"] == "Work account"
        ok = await client.call_tool("crawl_url", {"url": f"{SITE}/", "profile": "plain"})
        assert not ok.is_error, shown(ok)


@pytest.mark.anyio
async def test_missing_environment_variable_is_named(
    crawlkeeper_client: Callable[..., Any], profiles: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CK_TEST_NOT_SET_VAR", raising=False)
    profiles("needs_env", '[[cookies]]\nname = "tok"\nvalue_env = "CK_TEST_NOT_SET_VAR"\ndomain = "example.com"\n')
    async with crawlkeeper_client() as client:
        message = error_text(await client.call_tool("create_session", {"profile": "needs_env"}))
    assert "CK_TEST_NOT_SET_VAR" in message
    assert "needs_env.toml" in message
    assert "not set" in message


@pytest.mark.anyio
async def test_value_file_cookie_is_read_relative_to_the_profile(
    crawlkeeper_client: Callable[..., Any], crawlkeeper_app: Any, profiles: Callable[..., Path]
) -> None:
    path = profiles("from_file", '[[cookies]]\nname = "tok"\nvalue_file = "tok.secret"\ndomain = "example.com"\n')
    async with crawlkeeper_client() as client:
        missing = error_text(await client.call_tool("create_session", {"profile": "from_file"}))
        assert "tok.secret" in missing and "does not exist" in missing
        (path.parent / "tok.secret").write_text("file-secret-77aa\n", encoding="utf-8")
        profiles("from_file", path.read_text(encoding="utf-8"))  # touch: the profile is re-read
        created = await client.call_tool("create_session", {"session_id": "f", "profile": "from_file"})
        assert not created.is_error, shown(created)
        assert crawlkeeper_app.sessions.get("f").context.jar[0]["value"] == "file-secret-77aa"
        assert "file-secret-77aa" not in shown(created)


# -- reloading -------------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_reload_on_change_and_bad_edit_keeps_last_good(
    crawlkeeper_client: Callable[..., Any], crawlkeeper_app: Any, profiles: Callable[..., Path],
    caplog: pytest.LogCaptureFixture, site: Any,
) -> None:
    async def descriptions(client: Any) -> dict[str, str]:
        result = await client.call_tool("list_profiles", {})
        return {p["name"]: p["description"] for p in result.structured_content["profiles"]}

    profiles("live", 'description = "one"\n[crawl]\noutput = "text"\n')
    async with crawlkeeper_client() as client:
        assert (await descriptions(client))["live"] == "one"
        profiles("live", 'description = "two"\n[crawl]\noutput = "html"\n')
        assert (await descriptions(client))["live"] == "two"
        caplog.set_level(logging.WARNING, logger="crawlkeeper")
        profiles("live", 'description = "three"\n[crawl\n')
        assert (await descriptions(client))["live"] == "two"
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert any("live.toml" in r.getMessage() and "last good version" in r.getMessage() for r in warnings)
        used = await client.call_tool("crawl_url", {"url": f"{SITE}/", "profile": "live"})
        assert not used.is_error and used.structured_content["output"] == "html"
        profiles("live", 'description = "four"\n')
        assert (await descriptions(client))["live"] == "four"
        (crawlkeeper_app.config.profiles_dir / "live.toml").unlink()
        assert "live" not in await descriptions(client)


def test_refresh_is_rate_limited(crawlkeeper_app: Any, profiles: Callable[..., Path]) -> None:
    crawlkeeper_app.profiles.refresh_s = 3600  # (the write_profile fixture set it to 0)
    crawlkeeper_app.profiles.refresh(force=True)
    profiles("later", 'description = "later"\n')
    assert "later" not in crawlkeeper_app.profiles.names()
    crawlkeeper_app.profiles.refresh_s = 0
    assert "later" in crawlkeeper_app.profiles.names()


# -- other sources ---------------------------------------------------------------------------------------------


class VaultSource:
    """A second profile source offering a name that the TOML files offer too."""

    @hookimpl
    def crawlkeeper_load_profiles(self, config: Any) -> list[Profile]:
        return [Profile(name="work", description="from the vault", source="vault:work")]


@pytest.mark.anyio
async def test_two_sources_for_one_name_is_an_error_naming_both(
    crawlkeeper_client: Callable[..., Any], crawlkeeper_register: Callable[..., Any], profiles: Any, site: Any
) -> None:
    crawlkeeper_register(VaultSource(), "vault")
    async with crawlkeeper_client() as client:
        message = error_text(await client.call_tool("create_session", {"profile": "work"}))
        assert "two sources" in message
        assert "plugin 'profiles'" in message and "work.toml" in message
        assert "plugin 'vault'" in message and "vault:work" in message
        assert not (await client.call_tool("crawl_url", {"url": f"{SITE}/", "profile": "plain"})).is_error


class MemorySource:
    """A replacement for the built-in profiles plugin: profiles from memory, with their crawl layer."""

    @hookimpl
    def crawlkeeper_load_profiles(self, config: Any) -> list[Profile]:
        return [Profile(name="mem", description="in memory", source="memory", crawl={"output": "links"})]

    @hookimpl
    def crawlkeeper_config_layers(self, request: CrawlRequest) -> list[ConfigLayer]:
        if request.profile is None:
            return []
        return [ConfigLayer(request.profile.label, crawl=request.profile.crawl, priority=PROFILE_LAYER_PRIORITY)]


@pytest.mark.anyio
@pytest.mark.parametrize("crawlkeeper_config_toml", ['[plugins]\ndisable = ["profiles"]\n'])
async def test_disabled_builtin_replaced_by_another_source(
    crawlkeeper_client: Callable[..., Any], crawlkeeper_app: Any, crawlkeeper_register: Callable[..., Any],
    write_profile: Callable[..., Path], site: Any,
) -> None:
    assert crawlkeeper_app.pm.get_plugin("profiles") is None
    write_profile("ignored", 'description = "the built-in is off"\n')
    crawlkeeper_register(MemorySource(), "memory_profiles")
    async with crawlkeeper_client() as client:
        listed = (await client.call_tool("list_profiles", {})).structured_content["profiles"]
        assert listed == [{"name": "mem", "description": "in memory"}]
        result = await client.call_tool("crawl_url", {"url": f"{SITE}/", "profile": "mem"})
        assert not result.is_error, shown(result)
        assert result.structured_content["output"] == "links"
        assert "unknown profile 'ignored'" in error_text(
            await client.call_tool("crawl_url", {"url": f"{SITE}/", "profile": "ignored"}))


def test_profile_store_get_reports_errors(crawlkeeper_app: Any, profiles: Callable[..., Path]) -> None:
    profiles("bad", "[crawl]\nmax_chars = 1\n")
    with pytest.raises(ConfigError) as info:
        crawlkeeper_app.profile("bad")
    assert "profile 'bad'" in str(info.value)
    assert "[crawl] max_chars = 1" in str(info.value)
    assert crawlkeeper_app.profile("plain").crawl == {"output": "text"}
    assert crawlkeeper_app.profile(None) is None


# -- the CLI ----------------------------------------------------------------------------------------------------


def test_cli_profiles_names_the_broken_file(
    crawlkeeper_config: Any, profiles: Callable[..., Path], restore_logging: None
) -> None:
    from crawlkeeper.cli import main

    runner = CliRunner()
    good = runner.invoke(main, ["profiles", "--config", str(crawlkeeper_config.path)])
    assert good.exit_code == 0, good.output
    assert "work" in good.output and "Work account" in good.output
    assert CANARY not in good.output

    profiles("broken", '[crawl]\ntimeout_s = "slow"\n')
    bad = runner.invoke(main, ["profiles", "--config", str(crawlkeeper_config.path)])
    assert bad.exit_code != 0
    assert "broken.toml" in bad.output
    assert "timeout_s" in bad.output
    assert "plain" in bad.output  # the good ones are still listed


# -- a secret pasted where a variable's name belongs ----------------------------------------------------------

PASTED_SECRETS = ["ghp_R4nd0mT0kenV4lue0123456789abcdefXYZ", "AKIAIOSFODNN7EXAMPLE", "hunter2-pass!"]


@pytest.mark.anyio
@pytest.mark.parametrize("secret", PASTED_SECRETS)
@pytest.mark.parametrize("where", ["cookie", "auth"])
async def test_a_secret_pasted_as_a_variable_name_is_never_echoed(
    crawlkeeper_client: Callable[..., Any], crawlkeeper_config: Any, profiles: Callable[..., Path],
    caplog: pytest.LogCaptureFixture, restore_logging: None, secret: str, where: str,
) -> None:
    # Before: `value_env = "ghp_..."` passed the name check (letters, digits, _) and came back as
    # "environment variable ghp_... is not set" in list_profiles, tool errors, the log and `crawlkeeper profiles`.
    caplog.set_level(logging.DEBUG)
    if where == "cookie":
        text = f'[[cookies]]\nname = "tok"\nvalue_env = "{secret}"\ndomain = "example.com"\n'
    else:
        text = f'[auth]\nmethod = "cookies"\nfile = "c.txt"\ntoken_env = "{secret}"\n'
    profiles("pasted", text)
    async with crawlkeeper_client() as client:
        listed = {p["name"]: p["description"] for p in
                  (await client.call_tool("list_profiles", {})).structured_content["profiles"]}
        created = error_text(await client.call_tool("create_session", {"profile": "pasted"}))
        crawled = error_text(await client.call_tool("crawl_url", {"url": f"{SITE}/", "profile": "pasted"}))
    from crawlkeeper.cli import main
    cli = CliRunner().invoke(main, ["profiles", "--config", str(crawlkeeper_config.path)])
    for shown_text in (listed["pasted"], created, crawled, caplog.text, cli.output):
        assert secret not in shown_text
    assert listed["pasted"].startswith("(broken)")
    assert "pasted.toml" in created and ("value_env" in created or "token_env" in created)
    assert "may be the secret itself" in created
    from crawlkeeper.logs import redact
    assert redact(f"seen {secret} here") == "seen *** here"  # registered as a secret: masked in every log line


def test_resolve_secret_never_echoes_a_pasted_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    from crawlkeeper import env_var_problem, looks_like_env_name, resolve_secret

    secret = "sk_live_0123456789abcdefPASTED"
    with pytest.raises(ConfigError) as info:
        resolve_secret({"value_env": secret}, what="cookie 'sid'")
    assert secret not in str(info.value) and "cookie 'sid': value_env" in str(info.value)
    monkeypatch.delenv("SITE_TOKEN", raising=False)
    assert env_var_problem("SITE_TOKEN") == "environment variable SITE_TOKEN is not set"
    with pytest.raises(ConfigError, match="environment variable SITE_TOKEN is not set; export it"):
        resolve_secret({"value_env": "SITE_TOKEN"}, what="cookie 'sid'")
    monkeypatch.setenv("ck_lower_case_var", "from-the-env")  # a set variable is a name whatever its case
    assert resolve_secret({"value_env": "ck_lower_case_var"}, what="x") == "from-the-env"
    for name in ("SITE_TOKEN", "_PRIVATE", "API_KEY_2", "GITHUB_TOKEN_FOR_CI"):
        assert looks_like_env_name(name), name
    for value in ("ghp_abc", "token", "SITE_TOKEN\n", "2FA_CODE", "AKIAIOSFODNN7EXAMPLE", "A-B", "A" * 129):
        assert not looks_like_env_name(value), value
