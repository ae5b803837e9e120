"""Built-in ``cookies`` plugin: injects cookies into a new session, and the ``cookies`` auth method.

Cookies come from ``create_session(cookies=[...])`` (Playwright's format) and from the profile's
``[[cookies]]`` (values by ``value_env``/``value_file`` reference). The ``cookies`` auth method loads a
Netscape ``cookies.txt`` or a JSON export from a real browser (``[auth] method = "cookies"``, ``file``,
optional ``domains``). Values are registered as secrets: they never reach a log line or a result.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from crawlkeeper import (
    AuthMethod,
    CrawlError,
    Session,
    SessionRequest,
    hookimpl,
    register_secret,
    resolve_secret,
)

_PLAYWRIGHT_KEYS = ("name", "value", "url", "domain", "path", "expires", "httpOnly", "secure", "sameSite")
_SAME_SITE = {"strict": "Strict", "lax": "Lax", "none": "None", "no_restriction": "None"}


def normalise(
    cookie: dict[str, Any], session_url: str | None, *, what: str, bound: bool = False, http_only: bool = False
) -> dict[str, Any]:
    """A Playwright cookie from ``cookie``; without url/domain it applies to ``session_url``.

    ``bound``: the cookie must name its own site (``url`` or ``domain``) and never falls back to
    ``session_url`` -- a profile's secret must not follow whatever URL the caller passes.
    ``http_only``: the default of ``httpOnly`` when the cookie does not say (scripts cannot read it).
    """
    name = cookie.get("name")
    if not name:
        raise CrawlError(f"{what}: a cookie has no name")
    if bound and not cookie.get("url") and not cookie.get("domain"):
        raise CrawlError(
            f"{what} '{name}' has neither url nor domain: a profile cookie must name the site it belongs to "
            "(it is never sent to the URL a caller passes); add domain = \"...\" or url = \"https://...\""
        )
    check_same_site(cookie, what=f"{what} '{name}'")
    out = {k: cookie[k] for k in _PLAYWRIGHT_KEYS if cookie.get(k) is not None}
    if "value" not in out:
        out["value"] = resolve_secret(cookie, what=f"{what} '{name}'")
    out["value"] = str(out["value"])
    register_secret(out["value"])
    if http_only:
        out.setdefault("httpOnly", True)
    if "url" not in out and "domain" not in out:
        if not session_url:
            raise CrawlError(
                f"{what} '{name}' has neither url nor domain and the session has no url to apply it to; "
                "give the cookie a url or a domain, or pass url to create_session"
            )
        out["url"] = session_url
    if "url" in out:
        out.pop("path", None)  # Playwright takes either url or domain+path
        out.pop("domain", None)
    elif "path" not in out:
        out["path"] = "/"
    if "sameSite" in out:
        same_site = _SAME_SITE.get(str(out["sameSite"]).lower())
        if same_site is None:
            out.pop("sameSite")
        else:
            out["sameSite"] = same_site
    return out


def check_same_site(cookie: dict[str, Any], *, what: str) -> None:
    """Chromium silently drops a ``SameSite=None`` cookie that is not ``Secure``: say so instead."""
    same_site = _SAME_SITE.get(str(cookie.get("sameSite") or "").lower())
    if same_site == "None" and not cookie.get("secure"):
        raise CrawlError(
            f"{what} has sameSite = \"None\" without secure = true: browsers refuse such a cookie (it would "
            "silently never be sent); add secure = true (https sites) or use sameSite = \"Lax\""
        )


async def add_cookies(session: Session, cookies: list[dict[str, Any]], *, what: str) -> None:
    """Add cookies one call at a time so an error names the cookie (never its value)."""
    try:
        await session.context.add_cookies(cookies)
        return
    except Exception:
        pass
    for cookie in cookies:
        try:
            await session.context.add_cookies([cookie])
        except Exception as exc:
            detail = str(exc).splitlines()[0].replace(cookie["value"], "***")[:200]
            raise CrawlError(f"{what} '{cookie['name']}' cannot be set: {detail}") from None


@hookimpl
async def crawlkeeper_session_created(session: Session, request: SessionRequest) -> None:
    cookies: list[dict[str, Any]] = []
    if request.profile is not None:
        what = f"{request.profile.label} cookie"
        # Bound to their own site and HttpOnly unless the profile says otherwise (issue 13).
        cookies += [normalise(c, None, what=what, bound=True, http_only=True) for c in request.profile.cookies]
    cookies += [normalise(c, request.url, what="cookie") for c in request.cookies]
    request.mark_handled("cookies")
    if cookies:
        await add_cookies(session, cookies, what="cookie")


# -- the "cookies" auth method --------------------------------------------------------------------


class CookieFileParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    file: Path = Field(description="A Netscape cookies.txt or a JSON cookie export from a browser.")
    domains: list[str] | None = Field(None, description="Only load cookies for these domains (and subdomains).")


def parse_cookie_file(path: Path) -> list[dict[str, Any]]:
    """Cookies from a Netscape ``cookies.txt`` or a JSON export (a list, or ``{"cookies": [...]}``)."""
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")):
        data = json.loads(stripped)
        items = data.get("cookies", []) if isinstance(data, dict) else data
        out = []
        for item in items:
            cookie = {k: item[k] for k in ("name", "value", "domain", "path", "secure", "httpOnly") if k in item}
            expires = item.get("expires", item.get("expirationDate"))
            if isinstance(expires, int | float) and expires > 0:
                cookie["expires"] = float(expires)
            if item.get("sameSite"):
                cookie["sameSite"] = item["sameSite"]
            out.append(cookie)
        return out
    out = []
    for line in text.splitlines():
        http_only = line.startswith("#HttpOnly_")
        if http_only:
            line = line[len("#HttpOnly_"):]
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 7:
            raise ValueError("not a Netscape cookies.txt line (expected 7 tab-separated fields)")
        domain, _subdomains, cookie_path, secure, expires, name, value = fields
        cookie = {"name": name, "value": value, "domain": domain, "path": cookie_path or "/",
                  "secure": secure.upper() == "TRUE", "httpOnly": http_only}
        if expires.isdigit() and int(expires) > 0:
            cookie["expires"] = float(expires)
        out.append(cookie)
    return out


def _domain_matches(domain: str, wanted: list[str]) -> bool:
    domain = domain.lstrip(".").lower()
    return any(domain == w.lstrip(".").lower() or domain.endswith("." + w.lstrip(".").lower()) for w in wanted)


async def login_with_cookie_file(session: Session, params: CookieFileParams) -> None:
    try:
        cookies = parse_cookie_file(params.file.expanduser())
    except OSError as exc:
        raise CrawlError(f"cannot read cookie file {params.file}: {exc.strerror}") from None
    except ValueError as exc:
        raise CrawlError(f"cookie file {params.file} is neither JSON nor Netscape cookies.txt: {exc}") from None
    if params.domains:
        cookies = [c for c in cookies if _domain_matches(c.get("domain", ""), params.domains)]
    if not cookies:
        scope = " for those domains" if params.domains else ""
        raise CrawlError(f"cookie file {params.file} holds no cookies{scope}")
    normalised = [normalise(c, None, what=f"cookie from {params.file.name}") for c in cookies]
    await add_cookies(session, normalised, what=f"cookie from {params.file.name}")


@hookimpl
def crawlkeeper_auth_methods() -> list[AuthMethod]:
    return [
        AuthMethod(
            name="cookies",
            description="Load cookies exported from a real browser (Netscape cookies.txt or JSON).",
            params_model=CookieFileParams,
            login=login_with_cookie_file,
        )
    ]
