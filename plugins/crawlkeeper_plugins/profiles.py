"""Built-in ``profiles`` plugin: named TOML profiles in ``[profiles] dir``, re-read when they change.

A profile file ``<dir>/<name>.toml`` holds ``description``, ``[browser]`` and ``[crawl]`` overrides,
``[[cookies]]`` (values by ``value_env``/``value_file`` so no secret sits in the file), ``[auth]`` (``method``
and that method's params) and ``[security]`` (``allow_private``, ``allowed_domains``: narrowing only).
A broken file becomes a profile with ``error`` set (the server keeps running); a bad edit of a file that
was good keeps the last good version in use, with a warning.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from crawlkeeper import (
    PROFILE_LAYER_PRIORITY,
    Config,
    ConfigLayer,
    ContextOptions,
    CrawlOptions,
    CrawlRequest,
    Profile,
    Session,
    env_var_problem,
    hookimpl,
    own_sites,
    unscoped_credentials,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger("crawlkeeper.plugins.profiles")

#: Values never echoed in errors: headers carry tokens, js_code often carries credentials.
SECRET_BEARING_KEYS = {"extra_headers", "js_code"}
LAUNCH_KEYS = {"executable_path", "headless", "extra_args", "cdp_url"}


def env_problem(name: str) -> str | None:
    """What is wrong with an ``*_env`` reference, never echoing it unless it looks like a variable name
    (someone may have pasted the secret itself where the variable's name belongs)."""
    return env_var_problem(name)


class CookieEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(min_length=1)
    value: str | None = None
    value_env: str | None = None
    value_file: str | None = None
    url: str | None = None
    domain: str | None = None
    path: str | None = None
    expires: float | None = None
    httpOnly: bool | None = None
    secure: bool | None = None
    sameSite: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> CookieEntry:
        given = [k for k in ("value", "value_env", "value_file") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of value, value_env or value_file")
        return self


class SecurityTable(BaseModel):
    model_config = ConfigDict(extra="forbid")
    allow_private: list[str] | None = None
    allowed_domains: list[str] | None = None


class AuthTable(BaseModel):
    """``[auth]``: the auth method and its params, plus how to tell a logged-out page."""

    model_config = ConfigDict(extra="allow")
    method: str | None = Field(None, min_length=1)
    logged_out_url: str | None = Field(None, min_length=1, description="Substring or regex of a logged-out URL.")
    logged_out_status: list[int] | None = Field(None, description="Statuses of logged-out pages (default [401]).")
    logged_out_selector: str | None = Field(None, min_length=1, description="CSS selector on logged-out pages.")

    @field_validator("logged_out_selector")
    @classmethod
    def _valid_selector(cls, value: str | None) -> str | None:
        if value is not None:
            from cssselect import GenericTranslator, SelectorError

            try:
                GenericTranslator().css_to_xpath(value)
            except SelectorError as exc:
                raise ValueError(f"not a valid CSS selector ({exc})") from None
        return value


class ProfileFile(BaseModel):
    """The format of one profile file."""

    model_config = ConfigDict(extra="forbid")
    description: str = ""
    browser: dict[str, Any] = Field(default_factory=dict)
    crawl: dict[str, Any] = Field(default_factory=dict)
    cookies: list[CookieEntry] = Field(default_factory=list)
    auth: AuthTable | None = None
    security: SecurityTable | None = None


@dataclass
class _Cached:
    stamp: tuple[int, int]
    profile: Profile
    good: Profile | None  # the last version that loaded without error


def _check_overrides(model: type[BaseModel], table: dict[str, Any], section: str) -> list[str]:
    """Validate a partial override table against the full options model; problems as 'key: message'."""
    problems = []
    if section == "browser":
        for key in sorted(LAUNCH_KEYS & table.keys()):
            problems.append(f"[browser] {key}: can only be set in the server config, not in a profile")
        table = {k: v for k, v in table.items() if k not in LAUNCH_KEYS}
    try:
        model.model_validate(table)
    except ValidationError as exc:
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            # show the bad value like the merge does (never for headers: they may hold a secret)
            top = str(err["loc"][0]) if err["loc"] else ""
            hidden = err["type"] == "extra_forbidden" or top in SECRET_BEARING_KEYS or not top
            shown = "" if hidden else f" = {table.get(top)!r}"
            problems.append(f"[{section}] {key}{shown}: {msg}")
    return problems


def _check_headers(browser: dict[str, Any], base: Path) -> list[str]:
    """``[browser] extra_headers`` given by reference: the variable is set, the file exists (made absolute)."""
    problems = []
    headers = browser.get("extra_headers")
    if not isinstance(headers, dict):
        return problems
    for name, spec in headers.items():
        if not isinstance(spec, dict):
            continue
        if isinstance(spec.get("value_env"), str) and env_problem(spec["value_env"]):
            problems.append(f"[browser] extra_headers.{name}.value_env: {env_problem(spec['value_env'])}")
        if isinstance(spec.get("value_file"), str):
            file = Path(os.path.expanduser(spec["value_file"]))
            spec["value_file"] = str(file if file.is_absolute() else base / file)
            if not Path(spec["value_file"]).is_file():
                problems.append(f"[browser] extra_headers.{name}.value_file: {spec['value_file']} does not exist")
    return problems


def _unbound_headers(parsed: ProfileFile, cookies: list[dict[str, Any]], server_sites: list[str]) -> list[str]:
    """Credential-like headers with no site of the profile's own to go to."""
    headers = parsed.browser.get("extra_headers")
    if not isinstance(headers, dict):
        return []
    try:
        sites = own_sites(
            allowed_domains=parsed.security.allowed_domains if parsed.security else None,
            header_domains=parsed.browser.get("header_domains") or server_sites,
            cookies=cookies,
            auth=parsed.auth.model_dump() if parsed.auth else None,
        )
    except (ValueError, TypeError) as exc:
        return [f"[browser] header_domains: {exc}"]
    return [
        f"[browser] extra_headers.{name}: a credential header needs the profile's own sites, and this profile "
        "has none; set [security] allowed_domains (or [browser] header_domains) to the domains it may go to"
        for name in unscoped_credentials(headers, sites)
    ]


def load_profile_file(path: Path, display: str, server_sites: list[str] | None = None) -> Profile:
    """Parse and validate one file; any problem becomes ``Profile.error`` naming the file and the key.

    ``server_sites``: the server config's ``[browser] header_domains`` (a scope for headers too)."""
    name = path.stem
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        return Profile(name=name, source=display, error=f"{display}: not valid TOML: {exc}")
    except (OSError, UnicodeDecodeError) as exc:
        return Profile(name=name, source=display, error=f"{display}: cannot read: {exc}")
    try:
        parsed = ProfileFile.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = err["loc"]
            key = ".".join(str(p) for p in loc)
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{key}: {msg}")
        return Profile(name=name, source=display, error=f"{display}: " + "; ".join(problems))
    problems = _check_headers(parsed.browser, path.parent)
    problems += _check_overrides(ContextOptions, parsed.browser, "browser")
    problems += _check_overrides(CrawlOptions, parsed.crawl, "crawl")
    cookies = []
    for index, cookie in enumerate(parsed.cookies):
        entry = cookie.model_dump(exclude_none=True)
        if not cookie.url and not cookie.domain:
            # Never bound to the caller's URL: that would send the secret wherever an agent points it.
            problems.append(f"cookies[{index}] ('{cookie.name}'): give url or domain (a profile cookie must name "
                            "the site it belongs to)")
        if (cookie.sameSite or "").lower() in ("none", "no_restriction") and not cookie.secure:
            problems.append(f"cookies[{index}] ('{cookie.name}').sameSite: \"None\" needs secure = true (browsers "
                            "drop such a cookie silently); add secure = true or use \"Lax\"")
        if cookie.value_env:
            problem = env_problem(cookie.value_env)
            if problem:
                problems.append(f"cookies[{index}] ('{cookie.name}').value_env: {problem}")
        if cookie.value_file:
            file = Path(os.path.expanduser(cookie.value_file))
            entry["value_file"] = str(file if file.is_absolute() else path.parent / file)
            if not Path(entry["value_file"]).is_file():
                problems.append(f"cookies[{index}] ('{cookie.name}').value_file: {entry['value_file']} does not exist")
        cookies.append(entry)
    if not problems:
        problems += _unbound_headers(parsed, cookies, server_sites or [])
    auth = parsed.auth.model_dump(exclude_none=True) if parsed.auth else None
    if auth:
        for key, value in list(auth.items()):
            problem = env_problem(value) if key.endswith("_env") and isinstance(value, str) else None
            if problem:
                problems.append(f"[auth] {key}: {problem}")
            if key.endswith("_file") and isinstance(value, str):
                file = Path(os.path.expanduser(value))
                auth[key] = str(file if file.is_absolute() else path.parent / file)
    if problems:
        # The [auth] table stays on the broken profile so the core can also check it against its method: a
        # variable that is not set must not hide a misspelled key or method in the same file.
        return Profile(name=name, source=display, error=f"{display}: " + "; ".join(problems), auth=auth)
    return Profile(
        name=name,
        description=parsed.description,
        source=display,
        browser=parsed.browser,
        crawl=parsed.crawl,
        cookies=cookies,
        auth=auth,
        security=parsed.security.model_dump(exclude_none=True) if parsed.security else {},
    )


class ProfilesPlugin:
    """Reads ``<profiles dir>/*.toml``; only files whose mtime or size changed are parsed again."""

    def __init__(self) -> None:
        self._cache: dict[Path, _Cached] = {}

    @hookimpl
    def crawlkeeper_load_profiles(self, config: Config) -> list[Profile]:
        directory: Path = config.profiles_dir
        try:
            files = sorted(p for p in directory.glob("*.toml") if p.is_file())
        except OSError:
            files = []
        seen = set()
        out = []
        for path in files:
            seen.add(path)
            try:
                st = path.stat()
            except OSError:
                continue
            stamp = (st.st_mtime_ns, st.st_size)
            cached = self._cache.get(path)
            if cached is None or cached.stamp != stamp:
                cached = self._reload(path, stamp, cached, config)
            out.append(cached.profile)
        for gone in set(self._cache) - seen:
            del self._cache[gone]
        return out

    def _reload(self, path: Path, stamp: tuple[int, int], previous: _Cached | None, config: Config) -> _Cached:
        try:
            display = str(path.relative_to(config.base_dir))
        except ValueError:
            display = str(path)
        server_sites = list(getattr(config.settings.browser, "header_domains", []) or [])
        profile = load_profile_file(path, display, server_sites)
        if profile.error is None:
            if previous is not None:
                log.info("profile %s reloaded from %s", profile.name, display)
            cached = _Cached(stamp, profile, profile)
        elif previous is not None and previous.good is not None:
            log.warning("%s; keeping the last good version of profile '%s' in use", profile.error, profile.name)
            cached = _Cached(stamp, previous.good, previous.good)
        else:
            log.warning("%s", profile.error)
            cached = _Cached(stamp, profile, None)
        self._cache[path] = cached
        return cached

    @hookimpl
    def crawlkeeper_logged_out(self, session: Session, result: Any) -> bool | None:
        """Judge from the profile's ``[auth]`` ``logged_out_url`` / ``_status`` / ``_selector``."""
        profile = next((c.profile for c in self._cache.values() if c.profile.name == session.profile), None)
        if profile is None or not profile.auth:
            return None
        return looks_logged_out(profile.auth, result)

    @hookimpl
    def crawlkeeper_config_layers(self, request: CrawlRequest) -> list[ConfigLayer]:
        profile = request.profile
        if profile is None or not (profile.crawl or profile.browser):
            return []
        return [ConfigLayer(source=profile.label, crawl=profile.crawl, browser=profile.browser,
                            priority=PROFILE_LAYER_PRIORITY)]


def _url_rule_matches(rule: str, url: str) -> bool:
    if rule in url:
        return True
    try:
        return re.search(rule, url) is not None
    except re.error:
        return False


def looks_logged_out(auth: dict[str, Any], result: Any) -> bool:
    """Whether ``result`` is a logged-out page by the rules of an ``[auth]`` table."""
    if result.status in auth.get("logged_out_status", [401]):
        return True
    rule = auth.get("logged_out_url")
    # A crawl that asked for the login page itself (to log in with js_code) is not a sign of being logged out.
    if rule and _url_rule_matches(rule, result.final_url or "") and not _url_rule_matches(rule, result.url or ""):
        return True
    selector = auth.get("logged_out_selector")
    if selector and result.html:
        import lxml.html

        try:
            return bool(lxml.html.fromstring(result.html).cssselect(selector))
        except Exception:
            return False
    return False
