"""Finding, parsing and validating the config file; environment overrides; plugin settings; profiles dir."""

from __future__ import annotations

from pathlib import Path

import pytest

import crawlkeeper.config as ck_config
from crawlkeeper import ConfigError, CrawlRequest
from crawlkeeper.app import App
from crawlkeeper.config import find_config, load_config
from crawlkeeper.plugins import create_plugin_manager
from crawlkeeper.testing import FakeBrowser
from crawlkeeper_plugins.ttl import TTLSettings


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Four candidate configs, each with a different max_sessions, and an empty working directory."""
    dirs = {name: tmp_path / name for name in ("explicit", "env", "cwd", "user", "empty")}
    for number, (name, folder) in enumerate(dirs.items(), start=1):
        folder.mkdir()
        if name != "empty":
            filename = "config.toml" if name == "user" else "crawlkeeper.toml"
            (folder / filename).write_text(f"[sessions]\nmax_sessions = {number}\n", encoding="utf-8")
    monkeypatch.setattr(ck_config, "user_config_dir", lambda: dirs["user"])
    monkeypatch.chdir(dirs["empty"])
    return dirs


def max_sessions(explicit: object = None) -> int:
    return load_config(explicit).settings.sessions.max_sessions  # type: ignore[arg-type]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# -- lookup order -------------------------------------------------------------------------------------------


def test_lookup_order(places: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = places["explicit"] / "crawlkeeper.toml"
    monkeypatch.setenv("CRAWLKEEPER_CONFIG", str(places["env"] / "crawlkeeper.toml"))
    monkeypatch.chdir(places["cwd"])
    assert max_sessions(explicit) == 1  # --config wins over everything
    assert load_config(explicit).path == explicit.resolve()
    assert max_sessions() == 2  # then $CRAWLKEEPER_CONFIG
    monkeypatch.delenv("CRAWLKEEPER_CONFIG")
    assert max_sessions() == 3  # then ./crawlkeeper.toml
    assert load_config().path == (places["cwd"] / "crawlkeeper.toml").resolve()
    monkeypatch.chdir(places["empty"])
    assert max_sessions() == 4  # then the user config dir
    assert load_config().path == (places["user"] / "config.toml").resolve()


def test_no_config_anywhere_gives_the_defaults(places: dict[str, Path]) -> None:
    (places["user"] / "config.toml").unlink()
    assert find_config() is None
    config = load_config()
    assert config.path is None
    assert config.settings.sessions.max_sessions == 64
    assert "built-in defaults" in config.origin


def test_missing_explicit_or_env_config_is_an_error(places: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    missing = places["empty"] / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        load_config(missing)
    monkeypatch.setenv("CRAWLKEEPER_CONFIG", str(missing))
    with pytest.raises(ConfigError, match=r"CRAWLKEEPER_CONFIG.*nope\.toml"):
        load_config()


def test_user_config_dir_is_the_platform_one_by_default() -> None:
    path = ck_config.user_config_dir()
    assert path.name == "crawlkeeper"


# -- errors name the file and the key -------------------------------------------------------------------------


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "broken" / "crawlkeeper.toml", "[crawl\ntimeout_s = 5\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "TOML" in str(info.value)


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ('[sessions]\nmax_sessions = "many"\n', "[sessions] max_sessions", "integer"),
        ("[crawl]\ntimeout_s = -3\n", "[crawl] timeout_s", "greater than 0"),
        ("[crawl]\ntimeot_s = 5\n", "[crawl] timeot_s", "unknown key"),
        ('[browser]\nheadles = false\n', "[browser] headles", "unknown key"),
        ('[security]\nallow_private = "10.0.0.0/8"\n', "[security] allow_private", "list"),
    ],
)
def test_bad_value_or_unknown_key_names_file_and_key(tmp_path: Path, text: str, key: str, problem: str) -> None:
    path = write(tmp_path / "crawlkeeper.toml", text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert key in message
    assert problem in message.lower()


def test_unknown_section_is_named(tmp_path: Path) -> None:
    path = write(tmp_path / "crawlkeeper.toml", "[crawling]\ntimeout_s = 5\n")
    with pytest.raises(ConfigError, match=r"crawling.*unknown key") as info:
        load_config(path)
    assert str(path) in str(info.value)


# -- environment overrides ------------------------------------------------------------------------------


def test_environment_beats_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "crawlkeeper.toml", "[crawl]\ntimeout_s = 10\nmax_chars = 5000\n")
    assert load_config(path).settings.crawl.timeout_s == 10
    monkeypatch.setenv("CRAWLKEEPER_CRAWL__TIMEOUT_S", "5")
    config = load_config(path)
    assert config.settings.crawl.timeout_s == 5
    assert config.settings.crawl.max_chars == 5000  # the rest of the section still comes from the file
    # and the crawl merge sees the environment's value as the config file's layer
    app = App(config, create_plugin_manager(load_entry_points=False), backend=FakeBrowser())
    options = app.crawl_options(CrawlRequest(url=None, profile=None, session=None, arguments={}))
    assert options.timeout_s == 5
    assert options.max_chars == 5000


def test_environment_alone_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ck_config, "user_config_dir", lambda: tmp_path / "nothing")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CRAWLKEEPER_SESSIONS__MAX_SESSIONS", "7")
    assert load_config().settings.sessions.max_sessions == 7


@pytest.mark.parametrize("value", ["abc", "-1"])
def test_bad_environment_value_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    path = write(tmp_path / "crawlkeeper.toml", "[crawl]\ntimeout_s = 10\n")
    monkeypatch.setenv("CRAWLKEEPER_CRAWL__TIMEOUT_S", value)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "CRAWLKEEPER_CRAWL__TIMEOUT_S" in message
    assert "timeout_s" in message


# -- plugin settings ----------------------------------------------------------------------------------------


def test_plugin_settings_are_validated_by_the_plugin_model(tmp_path: Path) -> None:
    path = write(tmp_path / "crawlkeeper.toml", "[plugins.ttl]\nidle_s = 30\n")
    settings = load_config(path).plugin_settings("ttl", TTLSettings)
    assert settings.idle_s == 30
    assert settings.max_age_s == TTLSettings().max_age_s
    # a plugin without a table gets its defaults
    assert load_config(path).plugin_settings("other", TTLSettings) == TTLSettings()


@pytest.mark.parametrize(
    ("table", "key"),
    [("idle_s = -5", "idle_s"), ('idle_s = "forever"', "idle_s"), ("idel_s = 5", "idel_s")],
)
def test_bad_plugin_setting_names_file_key_and_plugin(tmp_path: Path, table: str, key: str) -> None:
    path = write(tmp_path / "crawlkeeper.toml", f"[plugins.ttl]\n{table}\n")
    config = load_config(path)  # the core does not know the plugin's keys: the plugin validates them
    with pytest.raises(ConfigError) as info:
        config.plugin_settings("ttl", TTLSettings)
    message = str(info.value)
    assert str(path) in message
    assert f"plugins.ttl.{key}" in message
    assert "plugin 'ttl'" in message


def test_bad_plugin_setting_is_a_startup_error(tmp_path: Path) -> None:
    from crawlkeeper.runtime import build_app

    path = write(tmp_path / "crawlkeeper.toml", "[plugins.ttl]\nmax_age_s = 0\n")
    with pytest.raises(ConfigError, match=r"plugin 'ttl'.*plugins\.ttl\.max_age_s") as info:
        build_app(path, backend=FakeBrowser())
    assert str(path) in str(info.value)


def test_plugin_table_that_is_not_a_table(tmp_path: Path) -> None:
    path = write(tmp_path / "crawlkeeper.toml", '[plugins]\nttl = "fast"\n')
    with pytest.raises(ConfigError, match=r"\[plugins\.ttl\] must be a table") as info:
        load_config(path).plugin_settings("ttl", TTLSettings)
    assert str(path) in str(info.value)


# -- [profiles] dir -------------------------------------------------------------------------------------


def test_profiles_dir_is_relative_to_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "conf" / "crawlkeeper.toml", '[profiles]\ndir = "my-profiles"\n')
    monkeypatch.chdir(tmp_path)
    assert load_config(path).profiles_dir == (tmp_path / "conf" / "my-profiles").resolve()
    # found through ./crawlkeeper.toml: still relative to that file, not to a later working directory
    monkeypatch.chdir(tmp_path / "conf")
    config = load_config()
    monkeypatch.chdir(tmp_path)
    assert config.profiles_dir == (tmp_path / "conf" / "my-profiles").resolve()


def test_profiles_dir_default_and_absolute(tmp_path: Path) -> None:
    path = write(tmp_path / "a" / "crawlkeeper.toml", "")
    assert load_config(path).profiles_dir == (tmp_path / "a" / "profiles").resolve()
    absolute = tmp_path / "elsewhere"
    write(path, f'[profiles]\ndir = "{absolute}"\n')
    assert load_config(path).profiles_dir == absolute
