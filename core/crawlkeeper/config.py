"""Finding, reading and validating the config file, with environment overrides.

Lookup: ``--config PATH`` > ``$CRAWLKEEPER_CONFIG`` > ``./crawlkeeper.toml`` > the user config dir
(``~/.config/crawlkeeper/config.toml`` on Linux). ``CRAWLKEEPER_<SECTION>__<KEY>`` overrides a key
(``CRAWLKEEPER_PLUGINS__<NAME>__<KEY>`` a plugin's setting): a list is given as JSON (``["a", "b"]``) or as a
comma list (``a,b``), a table as JSON, anything else as plain text. Errors name the file or the environment
variable, and the key.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .endpoints import Endpoint, EndpointSettings
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
    cdp_url: str | None = Field(None, description="Connect to a running browser (CDP) instead of launching one.")
    endpoints: list[str | EndpointSettings] = Field(
        default_factory=list,
        description="Remote browsers to use instead of a local one: ws://… (Playwright server), cdp+ws://… or "
        "cdp+http://… (CDP), or tables { url = …, headers = {…}, max_sessions = N }.",
    )
    warmup: Literal["launch", "early", "import", "off"] = Field(
        "launch",
        description="In the background from start-up (over stdio, once initialize is answered): launch the browser "
        "while crawl4ai imports, open the first call's page, then hand the browser to crawl4ai (launch); the same "
        "with the browser launched at process start, beside the MCP SDK import (early: a faster first call on an "
        "idle machine, a slower initialize on a busy one); only import crawl4ai (import: the first call launches "
        "the browser); or nothing (off: a server never used costs nothing).",
    )
    spare_context: bool = Field(
        True,
        description="Keep one unused browser context ready (per browser endpoint), so resuming or creating a "
        "session does not wait for Chromium to make one; it holds no page and counts against no session limit.",
    )

    @field_validator("endpoints")
    @classmethod
    def _known_endpoints(cls, endpoints: list[str | EndpointSettings]) -> list[str | EndpointSettings]:
        from .endpoints import split_url

        names = []
        for entry in endpoints:
            url = entry if isinstance(entry, str) else entry.url
            split_url(url)
            names.append(url)
        if len(set(names)) != len(names):
            raise ValueError("an endpoint is listed twice")
        return endpoints

    def fleet(self) -> list[Endpoint]:
        """The configured remote browsers (``endpoints``, else ``cdp_url`` as one CDP endpoint)."""
        from .endpoints import Endpoint

        if self.endpoints:
            return [Endpoint.parse(e) for e in self.endpoints]
        return [Endpoint.cdp(self.cdp_url)] if self.cdp_url else []

    @field_validator("extra_args")
    @classmethod
    def _no_policy_bypass(cls, args: list[str]) -> list[str]:
        from .launch import check_browser_args

        check_browser_args(args)
        return args

    @model_validator(mode="after")
    def _one_remote_setting(self) -> BrowserSettings:
        if self.endpoints and self.cdp_url:
            raise ValueError("set either cdp_url or endpoints, not both (cdp_url is one CDP endpoint: list it in "
                             "endpoints as cdp+<its URL>)")
        return self

    @model_validator(mode="after")
    def _credential_headers_need_sites(self) -> BrowserSettings:
        from .headers import unscoped_credentials

        bad = unscoped_credentials(self.extra_headers, self.header_domains)
        if bad:
            raise ValueError(
                f"extra_headers {', '.join(repr(n) for n in bad)} carry credentials but have no site to go to; "
                "set [browser] header_domains (they are then sent only to those domains), or put them in a "
                "profile with [security] allowed_domains"
            )
        return self

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
    adapt_to_cpu: bool = Field(
        True,
        description="While the machine's CPUs are saturated (Linux CPU pressure) and every crawl slot is busy, "
        "run fewer crawls at once, down to one per CPU (plus one per [browser] endpoints entry or cdp_url, so "
        "each remote browser keeps a crawl in flight): the others wait in the queue, where their timeout_s does "
        "not run, instead of starving each other into timeouts.",
    )
    max_browser_mb: int = Field(
        2048, ge=256, le=1_048_576,
        description="Memory the browser's process tree may use (sized for a 4 GB machine). Each renderer's "
        "JavaScript heap is limited to a quarter of it; above it, the renderer using the most is stopped.",
    )


class PluginsSettings(BaseModel):
    """``[plugins]``: ``disable`` and one table per plugin (validated by that plugin)."""

    model_config = ConfigDict(extra="allow")
    disable: list[str] = Field(default_factory=list)
    hook_timeout_s: float = Field(30.0, gt=0, le=3600)


class ProfilesSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dir: Path = Path("profiles")


JsCodePolicy = Literal["allow", "no-secrets", "deny"]


class SecuritySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    allow_private: list[str] = Field(default_factory=list)
    allowed_schemes: list[str] = Field(default_factory=lambda: ["http", "https"])
    js_code: JsCodePolicy = Field(
        "no-secrets",
        description="Caller-supplied scripts (js_code, wait_for='js:...'): 'allow' everywhere, 'no-secrets' only "
        "in sessions and crawls holding no profile or auth-method secret, 'deny' never.",
    )


class ServerSettings(BaseModel):
    """``[server]``: the HTTP transport (``crawlkeeper serve --transport http``), its clients and their quotas."""

    model_config = ConfigDict(extra="forbid")
    host: str = Field("127.0.0.1", description="Address to bind; anything but loopback wants TLS in front.")
    port: int = Field(8765, ge=0, le=65535)
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host header values accepted besides the bind address (e.g. the proxy's public name).",
    )
    allowed_origins: list[str] = Field(
        default_factory=list, description="Origin header values accepted (browser clients); none by default."
    )
    max_body_kb: int = Field(1024, ge=1, le=1_048_576, description="Larger request bodies get HTTP 413.")
    tokens_file: Path | None = Field(None, description="Hashed client tokens (default: tokens.json next to the "
                                                       "config file, or in the user config dir).")
    issuer_url: str | None = Field(None, description="OAuth authorization server: publishes protected-"
                                                     "resource metadata pointing clients at it.")
    public_url: str | None = Field(None, description="This server's URL as clients reach it (behind a proxy); "
                                                     "default http://HOST:PORT/mcp.")
    max_sessions_per_client: int = Field(16, ge=1, le=10_000)
    max_concurrent_crawls_per_client: int = Field(4, ge=1, le=256)
    max_queued_calls_per_client: int = Field(32, ge=0, le=100_000)
    shutdown_grace_s: float = Field(10.0, ge=0, le=600, description="In-flight calls get this long at SIGTERM.")
    header_timeout_s: float = Field(10.0, gt=0, le=300, description="A request's headers must arrive within this "
                                                                    "(a slowloris client is disconnected).")

    @field_validator("issuer_url", "public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value


class Settings(BaseModel):
    """The whole config file, with the environment's overrides merged in (see :func:`load_config`)."""

    model_config = ConfigDict(extra="forbid")

    browser: BrowserSettings = Field(default_factory=BrowserSettings)
    crawl: CrawlSettings = Field(default_factory=CrawlSettings)
    sessions: SessionsSettings = Field(default_factory=SessionsSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    plugins: PluginsSettings = Field(default_factory=PluginsSettings)
    profiles: ProfilesSettings = Field(default_factory=ProfilesSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    server: ServerSettings = Field(default_factory=ServerSettings)


def _is_list(annotation: Any) -> bool:
    """Whether a field takes a list (``list[str]``, ``list[str] | None`` ...)."""
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, set, frozenset):
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_is_list(arg) for arg in typing.get_args(annotation) if arg is not type(None))
    return False


def _is_table(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_table(arg) for arg in typing.get_args(annotation) if arg is not type(None))
    if origin is dict or annotation is dict:
        return True
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def env_value(var: str, raw: str, annotation: Any) -> Any:
    """An environment override's value for a field of type ``annotation``: a list from JSON or a comma list, a
    table from JSON, anything else as the text (pydantic converts it)."""
    text = raw.strip()
    if _is_list(annotation) or (annotation is None and text.startswith("[")):
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError as exc:
                raise ConfigError(
                    f"environment variable {var}: not a valid JSON list ({exc}); give a JSON list like "
                    '["a", "b"] or a comma list like a,b') from None
            if not isinstance(value, list):
                raise ConfigError(f"environment variable {var}: expected a list")
            return value
        return [item.strip() for item in text.split(",") if item.strip()]
    if _is_table(annotation) or (annotation is None and text.startswith("{")):
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise ConfigError(
                f"environment variable {var}: a table is given as a JSON object, like {{\"key\": 1}} ({exc})"
            ) from None
        if not isinstance(value, dict):
            raise ConfigError(f"environment variable {var}: expected a JSON object (a table)")
        return value
    return raw


def env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    """The ``CRAWLKEEPER_<SECTION>__<KEY>`` variables of ``environ`` as nested tables, and which variable set
    which key (for error messages). Unknown sections or keys are errors naming the variable."""
    tree: dict[str, Any] = {}
    origins: dict[tuple[str, ...], str] = {}
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX) or "__" not in var[len(ENV_PREFIX):]:
            continue  # CRAWLKEEPER_CONFIG, CRAWLKEEPER_LOG_LEVEL ... are not settings
        path = tuple(part.lower() for part in var[len(ENV_PREFIX):].split("__"))
        if any(not part for part in path):
            raise ConfigError(f"environment variable {var}: empty part in the name; use CRAWLKEEPER_<SECTION>__<KEY>")
        annotation = _annotation_at(var, path)
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment variable {var} conflicts with another variable setting the same key")
        node[path[-1]] = env_value(var, environ[var], annotation)
        origins[path] = var
    return tree, origins


def _annotation_at(var: str, path: tuple[str, ...]) -> Any:
    """The type of the setting at ``path`` (None inside a plugin's table: the plugin's model decides)."""
    model: type[BaseModel] = Settings
    for depth, part in enumerate(path):
        fields = model.model_fields
        if model is PluginsSettings and part not in fields:
            return None  # [plugins.<name>] tables are validated by the plugin
        if part not in fields:
            section = "".join(f"[{p}]" for p in path[:depth]) or "a section"
            close = difflib.get_close_matches(part, list(fields), n=1)
            hint = f"; did you mean {ENV_PREFIX}{'__'.join(p.upper() for p in (*path[:depth], close[0]))}?" if close \
                else f"; known: {', '.join(fields)}"
            what = "section" if depth == 0 else f"key of {section}"
            raise ConfigError(f"environment variable {var}: unknown {what} '{part}'{hint}")
        annotation = fields[part].annotation
        if depth == len(path) - 1:
            return annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            raise ConfigError(f"environment variable {var}: '{part}' is not a table")
        model = annotation
    return None


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class Config:
    """The loaded configuration: validated ``settings``, where it came from, and plugin settings access."""

    def __init__(
        self,
        settings: Settings,
        path: Path | None,
        raw: dict[str, Any],
        env_origins: dict[tuple[str, ...], str] | None = None,
    ) -> None:
        self.settings = settings
        self.path = path
        self.raw = raw
        self.env_origins = dict(env_origins or {})  # which environment variable set which key

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
    def tokens_file(self) -> Path:
        """Where the built-in ``tokens`` plugin keeps token hashes (``[server] tokens_file``)."""
        path = self.settings.server.tokens_file
        if path is None:  # next to the config file (the user config dir when there is none)
            return self.base_dir / "tokens.json"
        path = Path(os.path.expanduser(path))
        return path if path.is_absolute() else self.base_dir / path

    @property
    def disabled_plugins(self) -> list[str]:
        return list(self.settings.plugins.disable)

    def plugin_settings(self, plugin: str, model: type[M]) -> M:
        """Validate ``[plugins.<plugin>]`` with ``model``; errors name the file, the key and the plugin."""
        table = (self.settings.plugins.model_extra or {}).get(plugin, {})
        if not isinstance(table, dict):
            where = self.env_origins.get(("plugins", plugin))
            origin = f"environment variable {where}" if where else self.origin
            raise ConfigError(f"{origin}: [plugins.{plugin}] must be a table, got {type(table).__name__}")
        table = dict(table)
        for key, value in table.items():
            var = self.env_origins.get(("plugins", plugin, key))
            field_info = model.model_fields.get(key)
            if var and field_info is not None and isinstance(value, str):
                table[key] = env_value(var, value, field_info.annotation)  # a comma list for a list setting
        try:
            return model.model_validate(table)
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                var = _origin_of(self.env_origins, ("plugins", plugin, *(str(p) for p in err["loc"])))
                origin = f"environment variable {var}" if var else self.origin
                problems.append(f"{origin}: {_describe(err, f'plugins.{plugin}')}")
            raise ConfigError(f"invalid settings for plugin '{plugin}': " + "; ".join(problems)) from None


def user_config_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_config_dir("crawlkeeper", appauthor=False))


def find_config(
    explicit: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> Path | None:
    """The config file to use, or None for built-in defaults. An explicit path must exist."""
    environ = os.environ if environ is None else environ
    if explicit:
        path = Path(explicit).expanduser()
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist; create it or drop --config")
        if path.is_dir():
            raise ConfigError(f"config file {path} is a directory; pass the path of a .toml file")
        return path
    env = environ.get("CRAWLKEEPER_CONFIG")
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise ConfigError(f"CRAWLKEEPER_CONFIG points to {path}, which does not exist")
        return path
    for candidate in (Path("crawlkeeper.toml"), user_config_dir() / "config.toml"):
        if candidate.is_file():
            return candidate.resolve()
    return None


def load_config(
    explicit: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> Config:
    """Find, parse and validate the config. Raises :class:`ConfigError` naming the file or variable and the key.

    :param environ: where ``CRAWLKEEPER_*`` overrides (and ``CRAWLKEEPER_CONFIG``) are read; ``os.environ`` by
        default, ``{}`` for a config that nothing outside the file changes (the test fixtures).
    """
    environ = os.environ if environ is None else environ
    path = find_config(explicit, environ=environ)
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    overrides, origins = env_overrides(environ)
    try:
        settings = Settings.model_validate(_deep_merge(raw, overrides))
    except ValidationError as exc:
        file_origin = str(path) if path else "the built-in defaults"
        problems = []
        for err in exc.errors():
            var = _origin_of(origins, tuple(str(p) for p in err["loc"]))
            problems.append(_describe(err, None, f"environment variable {var}" if var else file_origin))
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
    return Config(settings, path.resolve() if path else None, raw, origins)


def _origin_of(origins: dict[tuple[str, ...], str], loc: tuple[str, ...]) -> str | None:
    """The environment variable that set ``loc`` or a table above it, if one did."""
    for depth in range(len(loc), 0, -1):
        if loc[:depth] in origins:
            return origins[loc[:depth]]
    return None


def _describe(err: Any, prefix: str | None, origin: str | None = None) -> str:
    loc = [str(p) for p in err["loc"]]
    key = ".".join(([prefix] if prefix else []) + loc)
    if len(loc) >= 2 and prefix is None:
        key = f"[{loc[0]}] " + ".".join(loc[1:])
    msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
    return f"{origin + ': ' if origin else ''}{key}: {msg}"
