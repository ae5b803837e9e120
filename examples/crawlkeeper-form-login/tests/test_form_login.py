"""Tests for the ``form`` auth method, through the real MCP layer, on crawlkeeper's fake browser (no Chromium).

Only the fixtures crawlkeeper ships for plugin authors are used: ``crawlkeeper_browser`` (canned pages),
``crawlkeeper_app``, ``crawlkeeper_register`` and ``crawlkeeper_client``.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import crawlkeeper_form_login
import pytest
from crawlkeeper_form_login import DEFAULT_PASSWORD_SELECTOR, DEFAULT_SUBMIT_SELECTOR, DEFAULT_USERNAME_SELECTOR
from pydantic import ValidationError

from crawlkeeper.testing import FakeBrowser, FakePageHandle

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ORIGIN = "https://app.example.com"
LOGIN = f"{ORIGIN}/login"
PRIVATE = f"{ORIGIN}/private"
USERNAME = "alice"
PASSWORD = "correct-horse-battery-staple"
WRONG = "not-the-password-42"
TOKEN = "tok-6f1c0ffee2b4"  # the session cookie's value: must never reach a result either
ENV = "WORK_PASSWORD"

FORM = """<form id="login" method="post" action="/login">
<input name="username" id="username">
<input type="password" name="password" id="password">
<button type="submit" id="submit">Log in</button>
</form>"""
LOGIN_HTML = f"<html><head><title>Log in</title></head><body><h1>Log in</h1>\n{FORM}\n</body></html>"
ERROR_HTML = (
    '<html><head><title>Log in</title></head><body><h1>Log in</h1>\n'
    f'<p class="error">Invalid username or password</p>\n{FORM}\n</body></html>'
)
PRIVATE_HTML = (
    "<html><head><title>Private area</title></head><body><h1>Private area</h1>\n"
    f'<p id="welcome">Welcome, {USERNAME}!</p>\n<p class="private">Only for logged-in users.</p></body></html>'
)


# -- the fake website ----------------------------------------------------------------------------------


def serve_site(browser: FakeBrowser, *, failure: str = "same-url", private_html: str = PRIVATE_HTML) -> None:
    """A login page whose submit button logs in (cookie + redirect) or shows an error, like a real site.

    ``failure``: "same-url" re-shows the form with an error at the login URL (what most sites and
    crawlkeeper's TestSite do); "redirect" sends the browser to ``/login?error=1`` with the error.
    """

    async def submit(page: FakePageHandle) -> None:
        if page.filled.get(DEFAULT_USERNAME_SELECTOR) == USERNAME and page.filled.get(DEFAULT_PASSWORD_SELECTOR) \
                == PASSWORD:
            await page.context.add_cookies([{"name": "app_session", "value": TOKEN, "domain": "app.example.com",
                                             "path": "/", "httpOnly": True}])
            await page.goto(PRIVATE)
        elif failure == "redirect":
            await page.goto(f"{LOGIN}?error=1")
        else:
            page.browser.add_page(LOGIN, ERROR_HTML, on_click=clicks)
            await page.goto(LOGIN)

    # the fake matches on_click by the exact selector string the plugin clicks: the default and "#submit"
    clicks = {DEFAULT_SUBMIT_SELECTOR: submit, "#submit": submit}
    browser.add_page(LOGIN, LOGIN_HTML, on_click=clicks)
    browser.add_page(f"{LOGIN}?error=1", ERROR_HTML, on_click=clicks)
    browser.add_page(PRIVATE, private_html, requires_cookie="app_session", login_url=LOGIN)


def toml_value(value: Any) -> str:
    return json.dumps(value)  # a JSON string or number is a valid TOML basic string or number


def write_profile(app: Any, name: str, auth: dict[str, Any], description: str = "Work account") -> Path:
    lines = [f"description = {toml_value(description)}", "", "[auth]"]
    lines += [f"{key} = {toml_value(value)}" for key, value in auth.items()]
    path = Path(app.config.profiles_dir) / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def form_auth(**overrides: Any) -> dict[str, Any]:
    return {"method": "form", "login_url": LOGIN, "username": USERNAME, "password_env": ENV} | overrides


def everything(result: Any) -> str:
    """All a client can see of a tool result: every text block and the structured content."""
    texts = [getattr(block, "text", "") for block in result.content]
    return "\n".join(texts) + "\n" + json.dumps(result.structured_content)


def error_text(result: Any) -> str:
    assert result.is_error, f"expected a tool error, got {everything(result)}"
    return result.content[0].text


@pytest.fixture
def site(crawlkeeper_browser: FakeBrowser) -> FakeBrowser:
    serve_site(crawlkeeper_browser)
    return crawlkeeper_browser


@pytest.fixture
def password(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(ENV, PASSWORD)
    return PASSWORD


def use_plugin(register: Any) -> None:
    """Register the plugin for this test (profiles must be written before: registering re-reads them)."""
    register(crawlkeeper_form_login, name="form")


# -- logging in ----------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_create_session_logs_in_through_the_form(
    site: FakeBrowser, password: str, crawlkeeper_app: Any, crawlkeeper_register: Any, crawlkeeper_client: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    write_profile(crawlkeeper_app, "work", form_auth())
    use_plugin(crawlkeeper_register)
    async with crawlkeeper_client() as client:
        created = await client.call_tool("create_session", {"profile": "work"})
        assert not created.is_error, everything(created)
        info = created.structured_content
        assert info["profile"] == "work"
        assert info["auth"] == "form"
        assert info["url"] == PRIVATE
        assert {"name": "app_session", "domain": "app.example.com"} in info["cookies"]

        session = crawlkeeper_app.sessions.get(info["session_id"])
        assert session.context.cookie_names() == ["app_session"]
        assert session.page.filled == {DEFAULT_USERNAME_SELECTOR: USERNAME, DEFAULT_PASSWORD_SELECTOR: PASSWORD}
        assert session.metadata["form_login"]["username"] == USERNAME
        assert site.visited(session.context) == [LOGIN, PRIVATE]

        crawled = await client.call_tool("crawl_url", {"url": PRIVATE, "session_id": info["session_id"]})
        assert not crawled.is_error, everything(crawled)
        assert crawled.structured_content["final_url"] == PRIVATE
        assert "Welcome, alice!" in crawled.structured_content["content"]

        listed = await client.call_tool("list_sessions", {})
        profiles = await client.call_tool("list_profiles", {})
    for result in (created, crawled, listed, profiles):
        assert PASSWORD not in everything(result)
        assert TOKEN not in everything(result)
    assert PASSWORD not in caplog.text


@pytest.mark.anyio
async def test_sessions_without_the_profile_stay_logged_out(
    site: FakeBrowser, password: str, crawlkeeper_app: Any, crawlkeeper_register: Any, crawlkeeper_client: Any
) -> None:
    write_profile(crawlkeeper_app, "work", form_auth())
    use_plugin(crawlkeeper_register)
    async with crawlkeeper_client() as client:
        assert not (await client.call_tool("create_session", {"session_id": "work", "profile": "work"})).is_error
        assert not (await client.call_tool("create_session", {"session_id": "anon"})).is_error
        crawled = await client.call_tool("crawl_url", {"url": PRIVATE, "session_id": "anon"})
        assert crawlkeeper_app.sessions.get("anon").context.cookie_names() == []
        assert crawlkeeper_app.sessions.get("work").context.cookie_names() == ["app_session"]
    assert crawled.structured_content["final_url"] == LOGIN  # the private page sent it to the login form


@pytest.mark.anyio
async def test_password_file_relative_to_the_profile(
    site: FakeBrowser, crawlkeeper_app: Any, crawlkeeper_register: Any, crawlkeeper_client: Any
) -> None:
    secrets = Path(crawlkeeper_app.config.profiles_dir) / "secrets"
    secrets.mkdir()
    (secrets / "work-password.txt").write_text(PASSWORD + "\n", encoding="utf-8")
    auth = form_auth(password_file="secrets/work-password.txt")
    del auth["password_env"]
    write_profile(crawlkeeper_app, "work", auth)
    use_plugin(crawlkeeper_register)
    async with crawlkeeper_client() as client:
        created = await client.call_tool("create_session", {"profile": "work"})
    assert not created.is_error, everything(created)
    assert created.structured_content["url"] == PRIVATE
    assert PASSWORD not in everything(created)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "conditions",
    [
        {"success_selector": "#welcome"},
        {"success_url": "/private*"},
        {"success_url": f"{ORIGIN}/priv*"},
        {"success_url": r"re:/private$", "success_selector": "#welcome"},
        {"submit_selector": "#submit"},
    ],
)
async def test_configured_success_conditions(
    conditions: dict[str, str], site: FakeBrowser, password: str, crawlkeeper_app: Any, crawlkeeper_register: Any,
    crawlkeeper_client: Any,
) -> None:
    write_profile(crawlkeeper_app, "work", form_auth(**conditions))
    use_plugin(crawlkeeper_register)
    async with crawlkeeper_client() as client:
        created = await client.call_tool("create_session", {"profile": "work"})
    assert not created.is_error, everything(created)
    assert created.structured_content["url"] == PRIVATE


@pytest.mark.anyio
async def test_an_explicit_success_condition_wins_over_an_alert_on_the_next_page(
    crawlkeeper_browser: FakeBrowser, password: str, crawlkeeper_app: Any, crawlkeeper_register: Any,
    crawlkeeper_client: Any,
) -> None:
    flash = PRIVATE_HTML.replace("<h1>", '<p role="alert">You have 3 new messages</p><h1>')
    serve_site(crawlkeeper_browser, private_html=flash)
    write_profile(crawlkeeper_app, "strict", form_auth())
    write_profile(crawlkeeper_app, "work", form_auth(success_selector="#welcome"))
    use_plugin(crawlkeeper_register)
    async with crawlkeeper_client() as client:
        # the default condition ("left the login page") is weak: an alert on the next page fails the login
        strict = await client.call_tool("create_session", {"profile": "strict"})
        created = await client.call_tool("create_session", {"profile": "work"})
    assert "the page shows an error message (it matches failure_selector" in error_text(strict)
    assert not created.is_error, everything(created)


# -- failing to log in ---------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("failure", ["same-url", "redirect"])
async def test_wrong_password_is_a_clear_tool_error(
    failure: str, crawlkeeper_browser: FakeBrowser, monkeypatch: pytest.MonkeyPatch, crawlkeeper_app: Any,
    crawlkeeper_register: Any, crawlkeeper_client: Any, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    serve_site(crawlkeeper_browser, failure=failure)
    monkeypatch.setenv(ENV, WRONG)
    write_profile(crawlkeeper_app, "work", form_auth())
    use_plugin(crawlkeeper_register)
    async with crawlkeeper_client() as client:
        result = await client.call_tool("create_session", {"session_id": "s1", "profile": "work"})
        listed = await client.call_tool("list_sessions", {})
    message = error_text(result)
    assert f"form login to {LOGIN} failed" in message
    # a real browser also quotes the element's text ("... shows the error text 'Invalid username or password'");
    # the fake browser's wait_for_selector returns True, not an element, so there is no text to quote here
    assert "the page shows an error message (it matches failure_selector '.error, .alert-danger" in message
    assert "check the username ('alice') and password_env WORK_PASSWORD" in message
    assert "auth method 'form'" in message and "No session was created" in message
    assert WRONG not in everything(result)
    assert WRONG not in caplog.text
    assert listed.structured_content["sessions"] == []
    assert all(context.closed for context in crawlkeeper_browser.contexts)


@pytest.mark.anyio
async def test_a_page_that_never_reaches_success_is_reported(
    site: FakeBrowser, password: str, crawlkeeper_app: Any, crawlkeeper_register: Any, crawlkeeper_client: Any
) -> None:
    write_profile(crawlkeeper_app, "work", form_auth(success_selector="#dashboard", failure_selector=""))
    use_plugin(crawlkeeper_register)
    async with crawlkeeper_client() as client:
        result = await client.call_tool("create_session", {"profile": "work"})
    message = error_text(result)
    assert f"form login to {LOGIN} failed: the page went to {PRIVATE}" in message
    assert "success_selector '#dashboard' appearing did not happen within 15 s" in message
    assert PASSWORD not in everything(result)


@pytest.mark.anyio
async def test_a_missing_form_field_names_the_selector_to_fix(
    crawlkeeper_browser: FakeBrowser, password: str, crawlkeeper_app: Any, crawlkeeper_register: Any,
    crawlkeeper_client: Any,
) -> None:
    crawlkeeper_browser.add_page(LOGIN, "<html><body><form><input name='user' id='user'></form></body></html>")
    write_profile(crawlkeeper_app, "work", form_auth())
    use_plugin(crawlkeeper_register)
    async with crawlkeeper_client() as client:
        result = await client.call_tool("create_session", {"profile": "work"})
    message = error_text(result)
    assert f"cannot fill username_selector {DEFAULT_USERNAME_SELECTOR!r} on {LOGIN} (" in message
    assert "or set username_selector in the profile's [auth] table" in message


@pytest.mark.anyio
async def test_env_var_missing_when_the_profile_loads(
    site: FakeBrowser, monkeypatch: pytest.MonkeyPatch, crawlkeeper_app: Any, crawlkeeper_register: Any,
    crawlkeeper_client: Any,
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    write_profile(crawlkeeper_app, "work", form_auth())
    use_plugin(crawlkeeper_register)
    async with crawlkeeper_client() as client:
        result = await client.call_tool("create_session", {"profile": "work"})
    message = error_text(result)
    assert "profile 'work'" in message
    assert f"password_env: environment variable {ENV} is not set" in message


@pytest.mark.anyio
async def test_env_var_unset_before_the_login(
    site: FakeBrowser, monkeypatch: pytest.MonkeyPatch, crawlkeeper_app: Any, crawlkeeper_register: Any,
    crawlkeeper_client: Any,
) -> None:
    monkeypatch.setenv(ENV, PASSWORD)
    write_profile(crawlkeeper_app, "work", form_auth())
    use_plugin(crawlkeeper_register)  # the profile is read (and found valid) now
    monkeypatch.delenv(ENV)
    async with crawlkeeper_client() as client:
        result = await client.call_tool("create_session", {"profile": "work"})
    message = error_text(result)
    assert f"environment variable {ENV} (password_env) is not set; export it" in message
    assert site.visited() == []  # nothing was loaded without a password


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        (form_auth(password_file="pw.txt"), "give exactly one of password_env or password_file"),
        ({k: v for k, v in form_auth().items() if k != "password_env"}, "give exactly one of password_env"),
        ({k: v for k, v in form_auth().items() if k != "login_url"}, "login_url: Field required"),
        (form_auth(user="bob"), "user: unknown key (did you mean 'username'?)"),
        (form_auth(login_url="ftp://app.example.com/login"), "login_url: Value error, must be an absolute http"),
        (form_auth(login_url="https://bob:pw@app.example.com/login"), "must not contain a user name or password"),
        (form_auth(success_url="re:(unclosed"), "success_url: Value error, not a valid regular expression"),
        (form_auth(timeout_s=0), "timeout_s: Input should be greater than 0"),
        (form_auth(username=""), "username: String should have at least 1 character"),
    ],
)
async def test_invalid_params_are_reported_with_the_profile_and_key(
    auth: dict[str, Any], expected: str, site: FakeBrowser, monkeypatch: pytest.MonkeyPatch, crawlkeeper_app: Any,
    crawlkeeper_register: Any, crawlkeeper_client: Any,
) -> None:
    monkeypatch.setenv(ENV, PASSWORD)
    monkeypatch.setenv("hunter2!", "x")  # so the profiles plugin's own "*_env is set" check passes
    write_profile(crawlkeeper_app, "work", auth)
    use_plugin(crawlkeeper_register)
    async with crawlkeeper_client() as client:
        result = await client.call_tool("create_session", {"profile": "work"})
    message = error_text(result)
    assert "profile 'work'" in message and "invalid params for 'form'" in message
    assert expected in message
    assert site.visited() == []


@pytest.mark.anyio
async def test_a_secret_pasted_into_password_env_is_refused_without_echoing_it(
    site: FakeBrowser, monkeypatch: pytest.MonkeyPatch, crawlkeeper_app: Any, crawlkeeper_register: Any,
    crawlkeeper_client: Any,
) -> None:
    monkeypatch.setenv("hunter2!", "x")
    write_profile(crawlkeeper_app, "work", form_auth(password_env="hunter2!"))
    use_plugin(crawlkeeper_register)
    async with crawlkeeper_client() as client:
        result = await client.call_tool("create_session", {"profile": "work"})
    message = error_text(result)
    assert "profile 'work'" in message and "password_env" in message and "not an environment variable name" in message
    assert "hunter2" not in message
    assert site.visited() == []


def test_password_env_with_a_trailing_newline_is_not_a_name() -> None:
    # `re.match` with `$` accepted "WORK_PASSWORD\n" (`$` matches before a final newline).
    with pytest.raises(ValidationError):
        crawlkeeper_form_login.FormLoginParams.model_validate(
            {"login_url": LOGIN, "username": USERNAME, "password_env": ENV + "\n"}
        )


@pytest.mark.anyio
async def test_auth_form_without_a_profile_asks_for_params(
    site: FakeBrowser, crawlkeeper_register: Any, crawlkeeper_client: Any
) -> None:
    use_plugin(crawlkeeper_register)
    async with crawlkeeper_client() as client:
        result = await client.call_tool("create_session", {"auth": "form"})
    message = error_text(result)
    assert "auth method 'form' needs params (login_url, username" in message
    assert "params come only from a profile" in message and '[auth] method = "form"' in message


# -- packaging -----------------------------------------------------------------------------------------


def test_entry_point_and_auth_method(crawlkeeper_app: Any, crawlkeeper_register: Any) -> None:
    # The declared entry point (crawlkeeper's tests/integration/test_example_plugin.py installs the package
    # into a throwaway venv and checks it is discovered through it).
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["name"] == "crawlkeeper-form-login"
    assert project["project"]["entry-points"]["crawlkeeper"] == {"form": "crawlkeeper_form_login"}
    use_plugin(crawlkeeper_register)
    plugin, method = crawlkeeper_app.auth_methods["form"]
    assert plugin == "form"
    assert method.params_model is crawlkeeper_form_login.FormLoginParams
    assert method.description
