"""crawlkeeper-form-login: the ``form`` auth method, which logs a session in through a login form.

A profile names it in its ``[auth]`` table::

    [auth]
    method = "form"
    login_url = "https://example.com/login"
    username = "alice"
    password_env = "EXAMPLE_PASSWORD"      # or password_file = "secrets/example.txt"
    success_selector = "#welcome"          # optional; see FormLoginParams

``login`` opens ``login_url`` in the session's page, fills the username and password fields, clicks the
submit button and then waits for the success condition, while watching for an error message. The password
is read at that moment (never stored in the profile), registered with :func:`crawlkeeper.register_secret`
before it is typed, and never appears in an error message or a log line.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from crawlkeeper import AuthMethod, ConfigError, CrawlError, Session, hookimpl, looks_like_env_name, register_secret

__version__ = "0.1.0"
__all__ = ["FormLoginParams", "__version__", "crawlkeeper_auth_methods", "login"]

log = logging.getLogger("crawlkeeper.plugins.form_login")

DEFAULT_USERNAME_SELECTOR = "input[name=username], input[name=email], input[type=email], #username"
DEFAULT_PASSWORD_SELECTOR = "input[type=password]"
DEFAULT_SUBMIT_SELECTOR = "button[type=submit], input[type=submit]"
DEFAULT_FAILURE_SELECTOR = ".error, .alert-danger, [role=alert]"

#: Once success or an error message shows, how long the other still gets to show up (see _wait_for_outcome).
GRACE_S = 0.25


class FormLoginParams(BaseModel):
    """The ``[auth]`` table of a profile with ``method = "form"`` (``method`` itself is removed first).

    Success is decided by ``success_url`` and/or ``success_selector`` (both must hold when both are set).
    With neither, the default is: the page's URL is no longer the login page's URL (neither ``login_url``
    nor the URL the login page ended up at). In every case a visible element matching ``failure_selector``
    while the login is not yet successful fails it at once with that element's text; with the default
    success condition an error shown on the page the form led to fails it too.
    """

    model_config = ConfigDict(extra="forbid")

    login_url: str = Field(description="The page with the login form (http or https).")
    username: str = Field(min_length=1, description="What is typed into the username field.")
    password_env: str | None = Field(None, description="Name of the environment variable holding the password.")
    password_file: Path | None = Field(
        None, description="A file holding the password (trailing newline removed); relative to the profile file."
    )
    username_selector: str = Field(DEFAULT_USERNAME_SELECTOR, min_length=1)
    password_selector: str = Field(DEFAULT_PASSWORD_SELECTOR, min_length=1)
    submit_selector: str = Field(DEFAULT_SUBMIT_SELECTOR, min_length=1)
    success_url: str | None = Field(
        None,
        min_length=1,
        description="URL the page must reach: a glob ('https://example.com/home*'), a path glob resolved "
        "against login_url ('/dashboard*'), or a regular expression after 're:' ('re:/(home|dashboard)').",
    )
    success_selector: str | None = Field(None, min_length=1, description="A selector that must become visible.")
    failure_selector: str = Field(
        DEFAULT_FAILURE_SELECTOR, description="A visible match means the login failed; \"\" turns the check off."
    )
    timeout_s: float = Field(15.0, gt=0, le=300, description="The whole login must finish within this time.")

    @field_validator("login_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http:// or https:// URL")
        if parts.username or parts.password:
            raise ValueError("must not contain a user name or password; use username and password_env")
        return value

    @field_validator("password_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        # Only a set variable or a conventional name (SITE_PASSWORD) is accepted, and so ever shown in a message:
        # anything else may be the password itself, pasted where its variable's name belongs.
        if value is not None and not looks_like_env_name(value):
            register_secret(value)
            raise ValueError("must be the NAME of an environment variable (e.g. SITE_PASSWORD), not a password")
        return value

    @field_validator("success_url")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is not None and value.startswith("re:"):
            try:
                re.compile(value[3:])
            except re.error as exc:
                raise ValueError(f"not a valid regular expression after 're:': {exc}") from None
        return value

    @model_validator(mode="after")
    def _one_password_source(self) -> FormLoginParams:
        given = [k for k in ("password_env", "password_file") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of password_env or password_file")
        return self

    @property
    def password_source(self) -> str:
        """How messages name where the password comes from (never the password)."""
        if self.password_env is not None:
            return f"password_env {self.password_env}"
        return f"password_file {self.password_file}"


def resolve_password(params: FormLoginParams) -> str:
    """The password, read now from the environment or the file; a clear error (without it) otherwise."""
    if params.password_env is not None:
        value = os.environ.get(params.password_env)
        if value is None:
            raise ConfigError(
                f"form login to {_safe_url(params.login_url)}: environment variable {params.password_env} "
                "(password_env) is not set; export it before starting crawlkeeper"
            )
        if not value:
            raise ConfigError(
                f"form login to {_safe_url(params.login_url)}: environment variable {params.password_env} "
                "(password_env) is empty"
            )
        return value
    assert params.password_file is not None
    path = params.password_file.expanduser()
    try:
        value = path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise ConfigError(
            f"form login to {_safe_url(params.login_url)}: cannot read password_file {path}: {reason}"
        ) from None
    if not value:
        raise ConfigError(f"form login to {_safe_url(params.login_url)}: password_file {path} is empty")
    return value


async def login(session: Session, params: FormLoginParams) -> None:
    """Log ``session`` in: open the login page, fill the form, submit it and wait for success.

    :raises ConfigError: the password cannot be read.
    :raises CrawlError: the page, a field or the button cannot be found, or the login did not succeed.
    """
    password = resolve_password(params)
    register_secret(password)  # before it is typed anywhere: from here on no log line can show it
    page = session.page
    where = _safe_url(params.login_url)
    deadline = time.monotonic() + params.timeout_s

    def remaining_ms() -> float:
        return max(1.0, (deadline - time.monotonic()) * 1000)

    def fail(detail: str) -> CrawlError:
        return CrawlError(f"form login to {where} failed: {detail}".replace(password, "***"))

    try:
        response = await page.goto(params.login_url, wait_until="domcontentloaded", timeout=remaining_ms())
    except Exception as exc:
        raise fail(f"could not load the login page: {_first_line(exc)}") from None
    login_page_url = str(page.url)
    status = getattr(response, "status", None)
    http = f" (HTTP {status})" if isinstance(status, int) and status >= 400 else ""

    steps: list[tuple[str, str, str, Callable[[], Any]]] = [
        ("fill", "username_selector", params.username_selector,
         lambda: page.fill(params.username_selector, params.username, timeout=remaining_ms())),
        ("fill", "password_selector", params.password_selector,
         lambda: page.fill(params.password_selector, password, timeout=remaining_ms())),
        ("click", "submit_selector", params.submit_selector,
         lambda: page.click(params.submit_selector, timeout=remaining_ms())),
    ]
    for verb, key, selector, action in steps:
        try:
            await action()
        except Exception as exc:
            raise fail(
                f"cannot {verb} {key} {selector!r} on {_safe_url(login_page_url)}{http} ({_first_line(exc)}); "
                f"check that login_url shows the login form, or set {key} in the profile's [auth] table"
            ) from None

    outcome = await _wait_for_outcome(page, params, login_page_url, remaining_ms)
    check = f"check the username ({params.username!r}) and {params.password_source}"
    if outcome.error_text is not None:
        shown = f"the error text {outcome.error_text!r}" if outcome.error_text else "an error message"
        raise fail(f"the page shows {shown} (it matches failure_selector {params.failure_selector!r}); {check}")
    now_at = _safe_url(str(page.url))
    if not outcome.succeeded:
        if str(page.url) in (params.login_url, login_page_url):
            detail = "the page still shows the login form"
        else:
            detail = f"the page went to {now_at}"
        raise fail(
            f"{detail} and {_describe_success(params)} did not happen within {params.timeout_s:g} s; {check}, "
            "or set success_url / success_selector in the profile's [auth] table"
        )
    session.metadata["form_login"] = {"login_url": where, "username": params.username, "at": time.time()}
    log.info("form login to %s as %r succeeded (now at %s)", where, params.username, now_at)


# -- waiting for the outcome ----------------------------------------------------------------------------


@dataclass
class _Outcome:
    succeeded: bool
    error_text: str | None = None  # set when failure_selector matched: the element's text ("" if unreadable)


async def _wait_for_outcome(
    page: Any, params: FormLoginParams, login_page_url: str, remaining_ms: Callable[[], float]
) -> _Outcome:
    """Race the success condition against a visible ``failure_selector`` match.

    When both hold, a configured ``success_url``/``success_selector`` wins (the user said what success looks
    like), while the default condition (the page left the login URL) loses to an error message: leaving a
    URL is a weak sign. Whichever side shows first, the other gets ``GRACE_S`` to show up too.
    """
    explicit = params.success_url is not None or params.success_selector is not None
    success = asyncio.ensure_future(_wait_for_success(page, params, login_page_url, remaining_ms))
    failure = None
    if params.failure_selector.strip():
        failure = asyncio.ensure_future(
            page.wait_for_selector(params.failure_selector, state="visible", timeout=remaining_ms())
        )
    watchers: list[asyncio.Future[Any]] = [success] if failure is None else [success, failure]

    def held(watcher: asyncio.Future[Any] | None, done: set[asyncio.Future[Any]]) -> bool:
        return watcher is not None and watcher in done and watcher.exception() is None

    pending: set[asyncio.Future[Any]] = set(watchers)
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            succeeded, failed = held(success, done), held(failure, done)
            if pending and ((succeeded and not failed and not explicit) or (failed and not succeeded and explicit)):
                # the side that would overrule this result gets a moment to show up
                late, pending = await asyncio.wait(pending, timeout=GRACE_S)
                succeeded, failed = succeeded or held(success, late), failed or held(failure, late)
            if failed and not (succeeded and explicit):
                assert failure is not None
                return _Outcome(False, await _error_text(failure.result()))
            if succeeded:
                return _Outcome(True)
            if success in done:
                return _Outcome(False)  # the success watch gave up: timed out, or the page went away
            # the failure watch ended without a match (e.g. timed out): only success can decide now
        return _Outcome(False)
    finally:
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)


async def _wait_for_success(
    page: Any, params: FormLoginParams, login_page_url: str, remaining_ms: Callable[[], float]
) -> None:
    if params.success_url is not None:
        await page.wait_for_url(_url_predicate(params.success_url, params.login_url), timeout=remaining_ms())
    if params.success_selector is not None:
        await page.wait_for_selector(params.success_selector, state="visible", timeout=remaining_ms())
    if params.success_url is None and params.success_selector is None:
        login_urls = {params.login_url, login_page_url}
        await page.wait_for_url(lambda url: str(url) not in login_urls, timeout=remaining_ms())


def _url_predicate(pattern: str, login_url: str) -> Callable[[str], bool]:
    """``re:REGEX`` is searched; otherwise a glob (``*`` spans ``/``), a leading ``/`` taken from login_url."""
    if pattern.startswith("re:"):
        regex = re.compile(pattern[3:])
        return lambda url: regex.search(str(url)) is not None
    if pattern.startswith("/"):
        pattern = urljoin(login_url, pattern)
    return lambda url: str(url) == pattern or fnmatch.fnmatchcase(str(url), pattern)


def _describe_success(params: FormLoginParams) -> str:
    parts = []
    if params.success_url is not None:
        parts.append(f"reaching success_url {params.success_url!r}")
    if params.success_selector is not None:
        parts.append(f"success_selector {params.success_selector!r} appearing")
    return " and ".join(parts) or "leaving the login page"


async def _error_text(handle: Any) -> str:
    """The visible text of the error element (Playwright's ``ElementHandle``), shortened; "" if unreadable."""
    try:
        text = await handle.inner_text()
    except Exception:
        return ""
    return " ".join(str(text).split())[:200]


# -- small helpers --------------------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def _safe_url(url: str) -> str:
    """A URL for messages: no user info, query or fragment (they may hold tokens)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(unparseable URL)"
    if not parts.scheme or not host:
        return url[:200]
    return f"{parts.scheme}://{host}{port}{parts.path}"


@hookimpl
def crawlkeeper_auth_methods() -> list[AuthMethod]:
    return [
        AuthMethod(
            name="form",
            description="Log in through a username/password form (password from an env var or a file).",
            params_model=FormLoginParams,
            login=login,
        )
    ]
