"""How auth params reach a method, checked where they enter: ``crawlkeeper profiles`` / ``doctor`` validate every
profile's ``[auth]`` against its method's params model without logging in; ``create_session`` enforces the rule
(params only from a profile); temporary sessions are visible to plugins."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import BaseModel, ConfigDict

from crawlkeeper import AuthMethod, CrawlkeeperError, Session, SessionRequest, hookimpl
from crawlkeeper.cli import main


def setup(tmp_path: Path, profiles: dict[str, str]) -> Path:
    (tmp_path / "profiles").mkdir()
    for name, text in profiles.items():
        (tmp_path / "profiles" / f"{name}.toml").write_text(text, encoding="utf-8")
    config = tmp_path / "crawlkeeper.toml"
    config.write_text("", encoding="utf-8")
    (tmp_path / "cookies.txt").write_text("[]", encoding="utf-8")
    return config


PROFILES = {
    "good": '[auth]\nmethod = "cookies"\nfile = "../cookies.txt"\n',
    "typo_method": '[auth]\nmethod = "cookie"\nfile = "x.txt"\n',
    "typo_key": '[auth]\nmethod = "cookies"\nfile = "x.txt"\ndomain = ["example.com"]\n',
    "bad_value": '[auth]\nmethod = "cookies"\nfile = "x.txt"\ndomains = "example.com"\n',
    "missing": '[auth]\nmethod = "cookies"\n',
    "no_auth": 'description = "plain"\n',
}


def test_profiles_command_validates_auth_tables_against_the_methods_model(
    tmp_path: Path, restore_logging: None
) -> None:
    config = setup(tmp_path, PROFILES)
    result = CliRunner().invoke(main, ["profiles", "--config", str(config)])
    assert result.exit_code == 1, result.output
    lines = {line.split()[1]: line for line in result.output.splitlines() if line.startswith(("ok", "BROKEN"))}
    assert lines["good"].startswith("ok") and lines["no_auth"].startswith("ok")
    expected = {
        "typo_method": ["profiles/typo_method.toml", "[auth] method", "unknown auth method 'cookie'",
                        "did you mean 'cookies'?"],
        "typo_key": ["profiles/typo_key.toml", "domain: unknown key (did you mean 'domains'?)"],
        "bad_value": ["profiles/bad_value.toml", "domains: Input should be a valid list"],
        "missing": ["profiles/missing.toml", "file: Field required"],
    }
    for name, fragments in expected.items():
        assert lines[name].startswith("BROKEN"), lines[name]
        for fragment in fragments:
            assert fragment in lines[name], (fragment, lines[name])
    assert "4 broken profile(s)" in result.stderr


def test_a_method_whose_plugin_is_disabled_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_logging: None
) -> None:
    monkeypatch.setenv("CRAWLKEEPER_DISABLE_PLUGINS", "cookies")
    config = setup(tmp_path, {"good": PROFILES["good"]})
    result = CliRunner().invoke(main, ["profiles", "--config", str(config)])
    assert result.exit_code == 1
    assert "the plugin 'cookies' that provides it is disabled" in result.output


def test_doctor_reports_broken_auth_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           restore_logging: None) -> None:
    monkeypatch.setenv("CRAWLKEEPER_BROWSER__EXECUTABLE_PATH", str(tmp_path / "no-browser"))
    config = setup(tmp_path, {"typo_key": PROFILES["typo_key"], "good": PROFILES["good"]})
    result = CliRunner().invoke(main, ["doctor", "--config", str(config)])
    assert result.exit_code == 1
    assert "[FAIL] profiles: 2 in" in result.output and "1 broken" in result.output
    assert "broken: typo_key: profile 'typo_key' (profiles/typo_key.toml) [auth] invalid params" in result.output
    assert "domain: unknown key" in result.output


# -- the rule in create_session ---------------------------------------------------------------------------------


class BearerParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token_env: str
    header: str = "Authorization"


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    greeting: str = "hi"


class Methods:
    def __init__(self) -> None:
        self.logins: list[tuple[str, Any]] = []

    @hookimpl
    def crawlkeeper_auth_methods(self) -> list[AuthMethod]:
        async def bearer(session: Session, params: BearerParams) -> None:
            self.logins.append(("bearer", params))

        async def anonymous(session: Session, params: NoParams) -> None:
            self.logins.append(("anonymous", params))

        return [AuthMethod("bearer", "a bearer token", BearerParams, bearer),
                AuthMethod("anonymous", "no params needed", NoParams, anonymous)]


@pytest.fixture
def methods(crawlkeeper_app: Any, crawlkeeper_register: Any, write_profile: Any,
            monkeypatch: pytest.MonkeyPatch) -> Methods:
    monkeypatch.setenv("API_TOKEN", "tok-123456")
    write_profile("api", '[auth]\nmethod = "bearer"\ntoken_env = "API_TOKEN"\n')
    write_profile("plain", 'description = "no auth"\n')
    write_profile("baerer", '[auth]\nmethod = "baerer"\ntoken_env = "API_TOKEN"\n')
    return crawlkeeper_register(Methods(), "methods")


@pytest.mark.anyio
async def test_params_come_from_the_profile(crawlkeeper_app: Any, methods: Methods) -> None:
    created = await crawlkeeper_app.create_session(profile="api")
    assert created["auth"] == "bearer"
    assert [(name, p.token_env) for name, p in methods.logins] == [("bearer", "API_TOKEN")]
    # naming the profile's own method again is the same as leaving it out
    await crawlkeeper_app.create_session(profile="api", auth="bearer")
    assert len(methods.logins) == 2


@pytest.mark.anyio
async def test_auth_alone_needs_a_method_whose_params_all_have_defaults(crawlkeeper_app: Any, methods: Methods) -> None:
    with pytest.raises(CrawlkeeperError) as info:
        await crawlkeeper_app.create_session(auth="bearer")
    message = str(info.value)
    assert "auth method 'bearer' needs params (token_env)" in message
    assert "params come only from a profile" in message and 'create_session(profile="<name>")' in message
    with pytest.raises(CrawlkeeperError, match=r"profile 'plain' .* has no \[auth\] table"):
        await crawlkeeper_app.create_session(auth="bearer", profile="plain")
    created = await crawlkeeper_app.create_session(auth="anonymous")
    assert created["auth"] == "anonymous"
    assert methods.logins[-1][0] == "anonymous" and methods.logins[-1][1].greeting == "hi"
    assert crawlkeeper_app.sessions.all()  # and nothing was left half-made by the refusals
    assert len(crawlkeeper_app.sessions.all()) == 1


@pytest.mark.anyio
async def test_auth_naming_another_method_than_the_profiles_is_an_error(crawlkeeper_app: Any, methods: Methods) -> None:
    with pytest.raises(CrawlkeeperError) as info:
        await crawlkeeper_app.create_session(auth="cookies", profile="api")
    message = str(info.value)
    assert "auth='cookies' does not match profile 'api'" in message
    assert "logs in with 'bearer'" in message and "leave auth out" in message
    assert methods.logins == []


@pytest.mark.anyio
async def test_an_unknown_method_in_a_profile_names_the_file(crawlkeeper_app: Any, methods: Methods) -> None:
    with pytest.raises(CrawlkeeperError) as info:
        await crawlkeeper_app.create_session(profile="baerer")
    message = str(info.value)
    assert "profile 'baerer' (profiles/baerer.toml) [auth] method: unknown auth method 'baerer'" in message
    assert "did you mean 'bearer'?" in message
    listed = {p["name"]: p["description"] for p in crawlkeeper_app.list_profiles()}
    assert listed["baerer"].startswith("(broken)") and "did you mean 'bearer'" in listed["baerer"]
    assert not listed["api"].startswith("(broken)")


# -- temporary sessions are visible to plugins --------------------------------------------------------------------


class Watcher:
    def __init__(self) -> None:
        self.created: list[tuple[bool, bool]] = []
        self.closed: list[tuple[str, bool]] = []

    @hookimpl
    def crawlkeeper_session_created(self, session: Session, request: SessionRequest) -> None:
        self.created.append((session.temporary, request.temporary))

    @hookimpl
    def crawlkeeper_session_closing(self, session: Session, reason: str) -> None:
        self.closed.append((reason, session.temporary))


@pytest.mark.anyio
async def test_a_crawl_with_a_logging_in_profile_uses_a_visible_temporary_session(
    crawlkeeper_app: Any, crawlkeeper_browser: Any, crawlkeeper_register: Any, methods: Methods
) -> None:
    crawlkeeper_browser.add_page("https://api.example/", "<title>API</title><p>data</p>")
    watcher = crawlkeeper_register(Watcher(), "watcher")
    result = await crawlkeeper_app.crawl("https://api.example/", profile="api")
    assert result["title"] == "API" and result["session_id"] is None
    assert watcher.created == [(True, True)]
    assert watcher.closed == [("temporary", True)]
    assert [name for name, _ in methods.logins] == ["bearer"]
    # an ordinary session is not temporary and closes with "closed"
    created = await crawlkeeper_app.create_session(profile="api")
    assert await crawlkeeper_app.list_sessions() != []
    await crawlkeeper_app.close_session(created["session_id"])
    assert watcher.created[-1] == (False, False) and watcher.closed[-1] == ("closed", False)


def test_an_unset_variable_does_not_hide_the_auth_tables_other_problems(
    tmp_path: Path, restore_logging: None
) -> None:
    config = setup(tmp_path, {"both": '[auth]\nmethod = "cookie"\nfile = "x.txt"\npassword_env = "CK_UNSET_VAR_X"\n'})
    result = CliRunner().invoke(main, ["profiles", "--config", str(config)])
    assert result.exit_code == 1
    line = next(line for line in result.output.splitlines() if line.startswith("BROKEN"))
    assert "environment variable CK_UNSET_VAR_X is not set" in line
    assert "unknown auth method 'cookie'" in line and "did you mean 'cookies'?" in line
