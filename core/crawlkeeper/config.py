"""Finding, reading and validating the config file, with environment overrides.

Lookup: ``--config PATH`` > ``$CRAWLKEEPER_CONFIG`` > ``./crawlkeeper.toml`` > the user config dir
(``~/.config/crawlkeeper/config.toml`` on Linux). ``CRAWLKEEPER_<SECTION>__<KEY>`` overrides a key.
Errors name the file (or the environment variable) and the key.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .errors import ConfigError
from .options import ContextOptions, CrawlOptions

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

ENV_PREFIX = "CRAWLKEEPER_"
M = TypeVar("M", bound=BaseModel)


class BrowserSettings(ContextOptions):
    """``[browser]``: how the shared browser is launched, plus defaults for every context."""

    executable_path: Path | None = Field(None, description="Chromium/Chrome binary; found automatically if unset.")
    headless: bool = True
    extra_args: list[str] = Field(default_factory=list)
    cdp_url: str | None = Field(None, description="Connect to a running browser instead of launching one.")

    @field_validator("extra_args")
    @classmethod
    def _no_policy_bypass(cls, args: list[str]) -> list[str]:
        from .egress import check_browser_args

        check_browser_args(args)
        return args

    def context_options(self) -> dict[str, Any]:
        """The keys of this section that are per-context defaults (the config file's merge layer)."""
        return self.model_dump(include=set(ContextOptions.model_fields), exclude_unset=True)


class CrawlSettings(CrawlOptions):
    """``[crawl]``: defaults for every crawl option."""


class SessionsSettings(BaseModel):
    """``[sessions]``: how many are active at once, when idle ones hibernate, how many may be saved."""

    model_config = ConfigDict(extra="forbid")
    max_sessions: int = Field(64, ge=1, le=10_000, description="Active sessions (each with its own context).")
    hibernate_after_s: float = Field(
        120.0, ge=0, description="Save and close an idle session's context after this long; 0: never."
    )
    max_stored: int = Field(1000, ge=1, le=1_000_000, description="Saved sessions, active or hibernated.")
    save_delay_s: float = Field(1.0, gt=0, le=600, description="Changes are saved at most this often.")
    max_relogins_per_hour: int = Field(
        3, ge=0, le=1000, description="Re-logins of one session after the site logged it out, per hour."
    )
    key_file: Path | None = Field(
        None, description="File holding the state key (default: keyring, else <config dir>/state.key)."
    )


class LimitsSettings(BaseModel):
    """``[limits]``: back-pressure so a flood of calls is refused instead of eating memory."""

    model_config = ConfigDict(extra="forbid")
    max_concurrent_crawls: int = Field(8, ge=1, le=256)
    max_queued_calls: int = Field(64, ge=0, le=100_000)


class PluginsSettings(BaseModel):
    """``[plugins]``: ``disable`` and one table per plugin (validated by that plugin)."""

    model_config = ConfigDict(extra="allow")
    disable: list[str] = Field(default_factory=list)
    hook_timeout_s: float = Field(30.0, gt=0, le=3600)


class ProfilesSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dir: Path = Path("profiles")


class SecuritySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    allow_private: list[str] = Field(default_factory=list)
    allowed_schemes: list[str] = Field(default_factory=lambda: ["http", "https"])


class Settings(BaseSettings):
    """The whole config file. Environment variables override file values."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid")

    browser: BrowserSettings = Field(default_factory=BrowserSettings)
    crawl: CrawlSettings = Field(default_factory=CrawlSettings)
    sessions: SessionsSettings = Field(default_factory=SessionsSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    plugins: PluginsSettings = Field(default_factory=PluginsSettings)
    profiles: ProfilesSettings = Field(default_factory=ProfilesSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)  # environment beats the file


class Config:
    """The loaded configuration: validated ``settings``, where it came from, and plugin settings access."""

    def __init__(self, settings: Settings, path: Path | None, raw: dict[str, Any]) -> None:
        self.settings = settings
        self.path = path
        self.raw = raw

    @property
    def origin(self) -> str:
        return str(self.path) if self.path else "the built-in defaults (no config file)"

    @property
    def base_dir(self) -> Path:
        """Relative paths in the config are relative to the config file's folder."""
        return self.path.parent if self.path else user_config_dir()

    @property
    def profiles_dir(self) -> Path:
        d = Path(os.path.expanduser(self.settings.profiles.dir))
        return d if d.is_absolute() else self.base_dir / d

    @property
    def disabled_plugins(self) -> list[str]:
        return list(self.settings.plugins.disable)

    def plugin_settings(self, plugin: str, model: type[M]) -> M:
        """Validate ``[plugins.<plugin>]`` with ``model``; errors name the file, the key and the plugin."""
        table = (self.settings.plugins.model_extra or {}).get(plugin, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{self.origin}: [plugins.{plugin}] must be a table, got {type(table).__name__}")
        try:
            return model.model_validate(table)
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                env_var = f"{ENV_PREFIX}PLUGINS__{plugin.upper()}__" + "__".join(str(p).upper() for p in err["loc"])
                origin = f"environment variable {env_var}" if env_var in os.environ else self.origin
                problems.append(f"{origin}: {_describe(err, f'plugins.{plugin}')}")
            raise ConfigError(f"invalid settings for plugin '{plugin}': " + "; ".join(problems)) from None


def user_config_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_config_dir("crawlkeeper", appauthor=False))


def find_config(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The config file to use, or None for built-in defaults. An explicit path must exist."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist; create it or drop --config")
        if path.is_dir():
            raise ConfigError(f"config file {path} is a directory; pass the path of a .toml file")
        return path
    env = os.environ.get("CRAWLKEEPER_CONFIG")
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise ConfigError(f"CRAWLKEEPER_CONFIG points to {path}, which does not exist")
        return path
    for candidate in (Path("crawlkeeper.toml"), user_config_dir() / "config.toml"):
        if candidate.is_file():
            return candidate.resolve()
    return None


def load_config(explicit: str | os.PathLike[str] | None = None) -> Config:
    """Find, parse and validate the config. Raises :class:`ConfigError` naming the file and key."""
    path = find_config(explicit)
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        settings = Settings(**raw)
    except ValidationError as exc:
        origin = str(path) if path else "the environment"
        raise ConfigError(
            "invalid configuration: " + "; ".join(_describe(err, None, origin) for err in exc.errors())
        ) from None
    return Config(settings, path.resolve() if path else None, raw)


def _describe(err: Any, prefix: str | None, origin: str | None = None) -> str:
    loc = [str(p) for p in err["loc"]]
    env_var = ENV_PREFIX + "__".join(p.upper() for p in loc)
    where = origin
    if prefix is None and loc and env_var in os.environ:
        where = f"environment variable {env_var}"
    key = ".".join(([prefix] if prefix else []) + loc)
    if len(loc) >= 2 and prefix is None:
        key = f"[{loc[0]}] " + ".".join(loc[1:])
    msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
    return f"{where + ': ' if where else ''}{key}: {msg}"
