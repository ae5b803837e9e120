"""Bad input at start-up is a clear error, never a traceback, never silence: environment overrides (comma lists,
JSON, unknown keys), unknown plugin names with "did you mean", every CLI command with a bad variable or file,
hermetic fixtures, and logging settings honoured by every command."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import crawlkeeper.plugins as ck_plugins
from crawlkeeper import ConfigError, PluginError, hookimpl
from crawlkeeper.cli import main
from crawlkeeper.config import load_config
from crawlkeeper.plugins import check_plugin_names, create_plugin_manager
from crawlkeeper.runtime import build_app
from crawlkeeper_plugins.ttl import TTLSettings


def write_config(tmp_path: Path, text: str = "") -> Path:
    path = tmp_path / "crawlkeeper.toml"
    path.write_text(text, encoding="utf-8")
    (tmp_path / "profiles").mkdir(exist_ok=True)
    return path


# -- item 6: environment overrides ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1", ["127.0.0.1"]),
        ("127.0.0.1,10.0.0.0/8", ["127.0.0.1", "10.0.0.0/8"]),
        (" 127.0.0.1 , 10.0.0.0/8 ,", ["127.0.0.1", "10.0.0.0/8"]),
        ('["127.0.0.1", "10.0.0.0/8"]', ["127.0.0.1", "10.0.0.0/8"]),
        ("", []),
    ],
)
def test_list_settings_take_a_comma_list_or_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]
) -> None:
    monkeypatch.setenv("CRAWLKEEPER_SECURITY__ALLOW_PRIVATE", value)
    assert load_config(write_config(tmp_path)).settings.security.allow_private == expected


def test_comma_lists_work_for_every_list_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRAWLKEEPER_PLUGINS__DISABLE", "ttl")
    monkeypatch.setenv("CRAWLKEEPER_BROWSER__EXTRA_ARGS", "--lang=de,--mute-audio")
    monkeypatch.setenv("CRAWLKEEPER_BROWSER__HEADLESS", "false")
    monkeypatch.setenv("CRAWLKEEPER_LIMITS__MAX_CONCURRENT_CRAWLS", "3")
    settings = load_config(write_config(tmp_path, "[browser]\nheadless = true\n")).settings
    assert settings.plugins.disable == ["ttl"]
    assert settings.browser.extra_args == ["--lang=de", "--mute-audio"]
    assert settings.browser.headless is False
    assert settings.limits.max_concurrent_crawls == 3


def test_a_plugins_list_setting_takes_a_comma_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import BaseModel

    class Settings(BaseModel):
        hosts: list[str] = []
        retries: int = 1

    monkeypatch.setenv("CRAWLKEEPER_PLUGINS__MINE__HOSTS", "a.example,b.example")
    monkeypatch.setenv("CRAWLKEEPER_PLUGINS__MINE__RETRIES", "4")
    settings = load_config(write_config(tmp_path)).plugin_settings("mine", Settings)
    assert settings.hosts == ["a.example", "b.example"]
    assert settings.retries == 4
    monkeypatch.setenv("CRAWLKEEPER_PLUGINS__TTL__IDLE_S", "soon")
    with pytest.raises(ConfigError, match=r"environment variable CRAWLKEEPER_PLUGINS__TTL__IDLE_S.*idle_s"):
        load_config(write_config(tmp_path)).plugin_settings("ttl", TTLSettings)


@pytest.mark.parametrize(
    ("var", "value", "fragments"),
    [
        ("CRAWLKEEPER_LIMITS__MAX_CONCURRENT_CRAWLS", "lots", ["CRAWLKEEPER_LIMITS__MAX_CONCURRENT_CRAWLS",
                                                               "[limits] max_concurrent_crawls"]),
        ("CRAWLKEEPER_SECURITY__ALLOW_PRIVAT", "127.0.0.1", ["CRAWLKEEPER_SECURITY__ALLOW_PRIVAT", "allow_privat",
                                                             "did you mean CRAWLKEEPER_SECURITY__ALLOW_PRIVATE"]),
        ("CRAWLKEEPER_SECURTY__ALLOW_PRIVATE", "127.0.0.1", ["CRAWLKEEPER_SECURTY__ALLOW_PRIVATE",
                                                             "did you mean CRAWLKEEPER_SECURITY"]),
        ("CRAWLKEEPER_SECURITY__ALLOW_PRIVATE", '["127.0.0.1"', ["CRAWLKEEPER_SECURITY__ALLOW_PRIVATE",
                                                                 "not a valid JSON list", "comma list"]),
        ("CRAWLKEEPER_BROWSER__EXTRA_HEADERS", "X-A: 1", ["CRAWLKEEPER_BROWSER__EXTRA_HEADERS", "JSON object"]),
    ],
)
def test_a_bad_variable_is_named_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, var: str, value: str, fragments: list[str]
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path))
    for fragment in fragments:
        assert fragment in str(info.value)


def test_variables_that_are_not_settings_are_left_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRAWLKEEPER_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("CRAWLKEEPER_DISABLE_PLUGINS", "ttl")
    load_config(write_config(tmp_path))


# -- item 5: unknown plugin names ------------------------------------------------------------------------------


class Bearer:
    @hookimpl
    def crawlkeeper_auth_methods(self) -> list[Any]:
        return []


def names_check(tmp_path: Path, toml: str = "") -> None:
    config = load_config(write_config(tmp_path, toml))
    pm = create_plugin_manager(config.disabled_plugins, extra_plugins=[("bearer", Bearer())])
    check_plugin_names(pm, config)


@pytest.mark.parametrize("var", ["CRAWLKEEPER_DISABLE_PLUGINS", "CRAWLKEEPER_LOAD_PLUGINS"])
def test_an_unknown_name_in_an_environment_list_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, var: str
) -> None:
    monkeypatch.setenv(var, "ttl,baerer")
    with pytest.raises(PluginError) as info:
        names_check(tmp_path)
    message = str(info.value)
    assert var in message and "'baerer' (did you mean 'bearer'?)" in message
    assert "'ttl'" not in message  # the known name is not complained about
    assert "Installed plugins: bearer, cookies, profiles, statefile, tokens, ttl" in message


def test_an_unknown_name_in_the_config_disable_list_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PluginError) as info:
        names_check(tmp_path, '[plugins]\ndisable = ["tll"]\n')
    assert "[plugins] disable in" in str(info.value) and "crawlkeeper.toml" in str(info.value)
    assert "'tll' (did you mean 'ttl'?)" in str(info.value)


def test_a_table_for_a_plugin_that_does_not_exist_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PluginError, match=r"\[plugins\.baerer\] in .*crawlkeeper\.toml.*did you mean 'bearer'"):
        names_check(tmp_path, "[plugins.baerer]\ntoken_env = 'X'\n")
    monkeypatch.setenv("CRAWLKEEPER_PLUGINS__TLL__IDLE_S", "5")
    with pytest.raises(PluginError, match=r"CRAWLKEEPER_PLUGINS__TLL__IDLE_S.*did you mean 'ttl'"):
        names_check(tmp_path)


def test_known_names_pass_including_disabled_and_not_loaded_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRAWLKEEPER_LOAD_PLUGINS", "cookies,profiles")
    names_check(tmp_path, '[plugins]\ndisable = ["bearer"]\n[plugins.ttl]\nidle_s = 5\n')


def test_build_app_checks_the_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRAWLKEEPER_DISABLE_PLUGINS", "cookie")
    with pytest.raises(PluginError, match="did you mean 'cookies'"):
        build_app(write_config(tmp_path))


# -- item 6 continued: no command ends in a traceback -----------------------------------------------------------

COMMANDS = [["serve"], ["crawl", "http://127.0.0.1:9/"], ["plugins"], ["profiles"], ["doctor"], ["demo"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize(
    ("env", "toml", "fragment"),
    [
        ({"CRAWLKEEPER_SECURITY__ALLOW_PRIVATE": '["x"'}, "", "CRAWLKEEPER_SECURITY__ALLOW_PRIVATE"),
        ({"CRAWLKEEPER_LIMITS__MAX_QUEUED_CALLS": "-1"}, "", "CRAWLKEEPER_LIMITS__MAX_QUEUED_CALLS"),
        ({"CRAWLKEEPER_DISABLE_PLUGINS": "baerer"}, "", "CRAWLKEEPER_DISABLE_PLUGINS"),
        ({"CRAWLKEEPER_LOG_LEVEL": "LOUD"}, "", "CRAWLKEEPER_LOG_LEVEL"),
        ({}, "[limits]\nmax_queued_calls = 'many'\n", "max_queued_calls"),
        ({}, "[limits\n", "not valid TOML"),
    ],
    ids=["bad-json", "bad-value", "unknown-plugin", "bad-log-level", "bad-file-value", "bad-toml"],
)
def test_every_command_reports_bad_input_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_logging: None,
    command: list[str], env: dict[str, str], toml: str, fragment: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = write_config(tmp_path, toml)
    result = CliRunner().invoke(main, [*command, "--config", str(config)])
    output = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exit_code not in (0, None), output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), (
        f"{command[0]} raised {result.exception!r}")
    assert "Traceback" not in output
    assert fragment in output, output


# -- item 7: hermetic fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def polluted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's shell with crawlkeeper settings left in it (set before the fixtures below are built)."""
    monkeypatch.setenv("CRAWLKEEPER_DISABLE_PLUGINS", "myplugin,ttl")
    monkeypatch.setenv("CRAWLKEEPER_LOAD_PLUGINS", "cookies")
    monkeypatch.setenv("CRAWLKEEPER_SESSIONS__MAX_SESSIONS", "1")
    monkeypatch.setenv("CRAWLKEEPER_SECURITY__ALLOW_PRIVATE", "not json and not a host[")


class MyPlugin:
    @hookimpl
    def crawlkeeper_auth_methods(self) -> list[Any]:
        from pydantic import BaseModel

        from crawlkeeper import AuthMethod

        async def login(session: Any, params: Any) -> None:
            pass

        return [AuthMethod("mine", "mine", BaseModel, login)]


def test_fixtures_ignore_the_users_environment(polluted: None, crawlkeeper_app: Any,
                                               crawlkeeper_register: Any) -> None:
    assert crawlkeeper_app.config.settings.sessions.max_sessions != 1
    assert crawlkeeper_app.config.settings.security.allow_private == []
    assert {"cookies", "profiles", "ttl"} <= {name for name, p in crawlkeeper_app.pm.list_name_plugin() if p}
    crawlkeeper_register(MyPlugin(), name="myplugin")
    assert "mine" in crawlkeeper_app.auth_methods


@pytest.mark.parametrize("crawlkeeper_config_toml", ['[plugins]\ndisable = ["myplugin"]\n'])
def test_registering_a_plugin_the_test_config_disables_fails_loudly(crawlkeeper_register: Any) -> None:
    with pytest.raises(pytest.UsageError, match=r"'myplugin' is disabled by \[plugins\] disable"):
        crawlkeeper_register(MyPlugin(), name="myplugin")


def test_the_shipped_pytest_plugin_does_not_define_anyio_backend() -> None:
    import crawlkeeper.testing.pytest_plugin as shipped

    assert not hasattr(shipped, "anyio_backend")


# -- item 8: logging settings reach every command -----------------------------------------------------------------


@pytest.mark.parametrize("command", [["plugins"], ["profiles"], ["doctor"], ["crawl", "http://127.0.0.1:9/"]],
                         ids=lambda c: c[0])
def test_log_level_and_plugin_tracing_are_honoured_by_every_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_logging: None, command: list[str]
) -> None:
    monkeypatch.setattr(ck_plugins, "TRACING", False)
    monkeypatch.setenv("CRAWLKEEPER_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("CRAWLKEEPER_TRACE_PLUGINS", "1")
    if command[0] == "doctor":  # no browser needed to prove the point: stop at the browser check
        monkeypatch.setenv("CRAWLKEEPER_BROWSER__EXECUTABLE_PATH", str(tmp_path / "no-such-browser"))
    config = write_config(tmp_path)
    CliRunner().invoke(main, [*command, "--config", str(config)])
    root = logging.getLogger()
    assert root.level == logging.DEBUG
    assert logging.getLogger("crawlkeeper.trace").isEnabledFor(logging.INFO)
    assert ck_plugins.TRACING is True


def test_trace_lines_reach_stderr_even_at_a_quiet_level(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_logging: None
) -> None:
    monkeypatch.setattr(ck_plugins, "TRACING", False)
    monkeypatch.setenv("CRAWLKEEPER_TRACE_PLUGINS", "1")
    result = CliRunner().invoke(main, ["plugins", "--config", str(write_config(tmp_path))])
    assert result.exit_code == 0
    assert "hook crawlkeeper_auth_methods -> " in result.stderr  # the command's own level is WARNING
    assert "hook crawlkeeper_" not in result.stdout


def test_the_login_debug_port_is_checked_like_every_other_launch_flag() -> None:
    from crawlkeeper.launch import check_browser_args, login_debug_args

    assert login_debug_args(["--lang=fr"], " 9333 ") == ["--lang=fr", "--remote-debugging-port=9333"]
    for bad in ("abc", "80", "99999", "9333 --proxy-server=http://evil", "-1", "9333=x"):
        with pytest.raises(ValueError, match="CRAWLKEEPER_LOGIN_DEBUG_PORT must be a port number"):
            login_debug_args([], bad)
    with pytest.raises(ValueError, match="--proxy-server"):  # the exemption covers that one flag only
        login_debug_args(["--proxy-server=http://127.0.0.1:1"], "9333")
    with pytest.raises(ValueError, match="--remote-debugging-port"):  # still refused in [browser] extra_args
        check_browser_args(["--remote-debugging-port=9333"])


def test_crawlkeeper_login_refuses_a_bad_debug_port_before_starting_anything(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DISPLAY", ":99")
    monkeypatch.setenv("CRAWLKEEPER_LOGIN_DEBUG_PORT", "9333 --proxy-server=http://evil")
    started: list[object] = []
    monkeypatch.setattr("crawlkeeper.cli._run_on_store", lambda *a, **k: started.append(a))
    result = CliRunner().invoke(main, ["login", "s1", "http://127.0.0.1:1/", "--config", str(tmp_path / "c.toml")])
    assert result.exit_code == 2, result.output
    assert "CRAWLKEEPER_LOGIN_DEBUG_PORT must be a port number" in result.output and not started
