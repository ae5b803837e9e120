"""Unit tests for crawlkeeper/testing/site.py: the shipped login site and its route extension point (the test-only
routes and the HitCounter sentinel of tests/sites.py are tested in test_sites.py)."""

from __future__ import annotations

import http.client
import http.cookiejar
import json
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from email.message import Message
from typing import Any, ClassVar

import pytest

from crawlkeeper.testing import site as ck_site


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _opener(
    *, follow: bool = True, jar: http.cookiejar.CookieJar | None = None
) -> urllib.request.OpenerDirector:
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]  # never use env proxies
    if jar is not None:
        handlers.append(urllib.request.HTTPCookieProcessor(jar))
    if not follow:
        handlers.append(_NoRedirect())
    return urllib.request.build_opener(*handlers)


def _fetch(
    url: str,
    *,
    opener: urllib.request.OpenerDirector | None = None,
    data: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    follow: bool = False,
    timeout: float = 5.0,
) -> tuple[int, Message, str, str]:
    """(status, headers, body, final url); HTTP errors and unfollowed redirects are returned, not raised."""
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, headers=headers or {})
    opener = opener or _opener(follow=follow)
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, response.headers, response.read().decode(), response.geturl()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers, exc.read().decode(), exc.geturl()


@pytest.fixture
def site() -> Iterator[Any]:
    with ck_site.TestSite() as running:
        yield running


def test_index_and_pages_have_title_h1_and_text(site: Any) -> None:
    status, _, body, _ = _fetch(site.url("/"))
    assert status == 200
    assert "<title>Crawlkeeper test site</title>" in body
    for link in ("/login", "/private", "/cookies", "/links"):
        assert f'href="{link}"' in body
    for path in ("/", "/login", "/cookies", "/links", "/form-echo", "/nope"):
        _, _, page, _ = _fetch(site.url(path))
        assert "<title>" in page and "<h1>" in page, path
        visible = re.sub(r"<script.*?</script>|<[^>]+>", "", page, flags=re.S)
        assert len(" ".join(visible.split())) >= 200, path
    assert site.base_url.startswith("http://127.0.0.1:")


def test_login_success_sets_httponly_cookie_and_private_shows_welcome(site: Any) -> None:
    status, headers, _, _ = _fetch(site.url("/login"), data={"username": "alice", "password": "wonderland"})
    assert status == 303
    assert headers["Location"] == "/private"
    cookie = headers["Set-Cookie"]
    assert cookie.startswith("ck_session=")
    for attribute in ("HttpOnly", "Path=/", "SameSite=Lax"):
        assert attribute in cookie

    jar = http.cookiejar.CookieJar()
    opener = _opener(jar=jar)
    status, _, body, final = _fetch(
        site.url("/login"), opener=opener, data={"username": "alice", "password": "wonderland"}
    )
    assert status == 200 and final == site.url("/private")
    assert '<p id="welcome">Welcome, alice!</p>' in body
    assert "secret-page-for-alice" in body
    assert "<title>Private area</title>" in body
    (jar_cookie,) = list(jar)
    assert jar_cookie.name == "ck_session" and jar_cookie.has_nonstandard_attr("HttpOnly")

    # Logging out clears the cookie and invalidates the session.
    token = jar_cookie.value
    status, headers, _, _ = _fetch(site.url("/logout"), headers={"Cookie": f"ck_session={token}"})
    assert status == 303 and headers["Location"] == "/login" and "Max-Age=0" in headers["Set-Cookie"]
    status, _, _, _ = _fetch(site.url("/private"), headers={"Cookie": f"ck_session={token}"})
    assert status == 303


def test_login_next_parameter_only_allows_local_paths(site: Any) -> None:
    creds = {"username": "bob", "password": "builder"}
    status, headers, _, _ = _fetch(site.url("/login?next=/cookies"), data=creds)
    assert status == 303 and headers["Location"] == "/cookies"
    status, headers, _, _ = _fetch(site.url("/login"), data={**creds, "next": "//evil.example/"})
    assert status == 303 and headers["Location"] == "/private"
    _, _, body, _ = _fetch(site.url("/login?next=/private"))
    assert '<input type="hidden" name="next" value="/private">' in body


def test_login_wrong_password_shows_error(site: Any) -> None:
    status, headers, body, _ = _fetch(site.url("/login"), data={"username": "alice", "password": "nope"})
    assert status == 200
    assert '<p class="error">Invalid username or password</p>' in body
    assert '<form id="login" method="post" action="/login">' in body
    assert headers["Set-Cookie"] is None
    _, _, body, _ = _fetch(site.url("/login"), data={"username": "mallory", "password": "x"})
    assert "Invalid username or password" in body


def test_private_without_cookie_redirects_to_login(site: Any) -> None:
    status, headers, _, _ = _fetch(site.url("/private"))
    assert status == 303
    assert headers["Location"] == "/login?next=/private"
    status, _, _, _ = _fetch(site.url("/private"), headers={"Cookie": "ck_session=forged"})
    assert status == 303


def test_session_token_injection(site: Any) -> None:
    token = site.session_token("bob")
    status, _, body, _ = _fetch(site.url("/private"), headers={"Cookie": f"{site.SESSION_COOKIE}={token}"})
    assert status == 200
    assert "Welcome, bob!" in body and "secret-page-for-bob" in body
    with pytest.raises(KeyError):
        site.session_token("nobody")


def test_cookies_echoes_names_never_values(site: Any) -> None:
    status, _, body, _ = _fetch(
        site.url("/cookies"), headers={"Cookie": "zeta=value-one-secret; alpha=value-two-secret"}
    )
    assert status == 200
    assert "<title>Cookie echo</title>" in body
    assert '<ul id="cookie-names"><li>alpha</li><li>zeta</li></ul>' in body
    assert "secret" not in body

    status, headers, body, _ = _fetch(site.url("/set-cookie?name=flavour&value=hidden-choc"))
    assert status == 200 and "Cookie flavour set" in body and "hidden-choc" not in body
    assert headers["Set-Cookie"] == "flavour=hidden-choc; Path=/"
    assert _fetch(site.url("/set-cookie?name=bad;name&value=x"))[0] == 400
    # A trailing newline must not slip past the check (`re.match` with `$` let "name\n" through).
    assert _fetch(site.url("/set-cookie?name=n%0A&value=x"))[0] == 400
    assert _fetch(site.url("/set-cookie?name=n&value=x%0A"))[0] == 400

    # Records keep cookie names, never values.
    entry = next(r for r in site.requests if r["path"] == "/cookies")
    assert entry["method"] == "GET" and entry["cookie_names"] == ["alpha", "zeta"]
    assert "cookie" not in entry["headers"] and "host" in entry["headers"]
    assert "secret" not in json.dumps(site.requests)



def test_redirects(site: Any) -> None:
    status, headers, _, _ = _fetch(site.url("/redirect?to=/tiny"))
    assert status == 302 and headers["Location"] == "/tiny"
    elsewhere = "http://127.0.0.3:9/x?y=1"
    status, headers, _, _ = _fetch(
        site.url(f"/redirect?to={urllib.parse.quote(elsewhere, safe='')}&status=307")
    )
    assert status == 307 and headers["Location"] == elsewhere
    assert _fetch(site.url("/redirect?to=/&status=200"))[0] == 400
    status, _, body, final = _fetch(site.url("/redirect?to=/tiny&status=301"), follow=True)
    assert status == 200 and body == "<html><body>ok</body></html>" and final == site.url("/tiny")


def test_not_found(site: Any) -> None:
    status, _, body, _ = _fetch(site.url("/does/not/exist?x=1"))
    assert status == 404 and "<title>Not found</title>" in body
    assert site.hits["/does/not/exist"] == 1


def test_form_echo_names_only(site: Any) -> None:
    status, _, body, _ = _fetch(site.url("/form-echo"), data={"first": "v-secret-1", "second": "v-secret-2"})
    assert status == 200
    assert '<ul id="field-names"><li>first</li><li>second</li></ul>' in body
    assert "v-secret" not in body








def test_only_loopback_hosts() -> None:
    with pytest.raises(ValueError):
        ck_site.TestSite(host="0.0.0.0")


def test_server_never_prints(capfd: pytest.CaptureFixture[str]) -> None:
    with ck_site.TestSite() as running:
        for path in ("/", "/nope", "/redirect?to=/&status=1", "/set-cookie?name=a;b&value=x"):
            _fetch(running.url(path))
        with socket.create_connection(("127.0.0.1", running.port), timeout=2) as sock:
            sock.sendall(b"garbage\r\n\r\n")
            sock.recv(4096)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_tiny_and_head_on_a_kept_alive_connection(site: Any) -> None:
    assert _fetch(site.url("/tiny"))[2] == "<html><body>ok</body></html>"
    conn = http.client.HTTPConnection("127.0.0.1", site.port, timeout=3)
    try:
        conn.request("HEAD", "/tiny")
        response = conn.getresponse()
        assert response.status == 200 and response.read() == b""
        assert int(response.headers["Content-Length"]) == len(b"<html><body>ok</body></html>")
        conn.request("GET", "/tiny")  # keep-alive: same connection is reused
        assert conn.getresponse().read() == b"<html><body>ok</body></html>"
    finally:
        conn.close()


def test_the_shipped_site_has_no_test_only_routes(site: Any) -> None:
    for path in ("/long", "/js", "/slow", "/loop", "/big", "/redirect-chain", "/status/500", "/subresources",
                 "/sw.js", "/ws"):
        assert _fetch(site.url(path))[0] == 404, path
    assert not hasattr(ck_site, "HitCounter")


def test_a_handler_subclass_adds_exact_and_prefix_routes() -> None:
    class Handler(ck_site.SiteHandler):
        GET_ROUTES: ClassVar[dict[str, str]] = {**ck_site.SiteHandler.GET_ROUTES, "/hello": "_hello"}
        PREFIX_ROUTES: ClassVar[dict[str, str]] = {"/echo/": "_echo"}

        def _hello(self) -> None:
            self._send_page(200, "Hello", "<p>hello</p>")

        def _echo(self, rest: str) -> None:
            self._send(200, rest.encode(), "text/plain")

    class Site(ck_site.TestSite):
        handler_class = Handler

    with Site() as running:
        assert "<title>Hello</title>" in _fetch(running.url("/hello"))[2]
        assert _fetch(running.url("/echo/a/b"))[2] == "a/b"
        assert _fetch(running.url("/echo/x"), data={"k": "v"})[0] == 405
        assert _fetch(running.url("/login"))[0] == 200  # the login site's routes are kept
    with ck_site.TestSite() as plain:
        assert _fetch(plain.url("/hello"))[0] == 404


def test_every_same_site_link_of_the_shipped_site_is_served(site: Any) -> None:
    # The index once linked /long, which only the repo's test-only site serves: a 404 for plugin authors.
    hrefs = set()
    for page in ("/", "/links"):
        body = _fetch(site.url(page))[2]
        hrefs |= {h for h in re.findall(r'href="([^"]+)"', body) if h.startswith("/")}
    assert {"/login", "/private", "/cookies", "/links", "/tiny"} <= hrefs
    for href in sorted(hrefs):
        assert _fetch(site.url(href))[0] != 404, href
    assert "Four links stay on this site" in _fetch(site.url("/links"))[2]
