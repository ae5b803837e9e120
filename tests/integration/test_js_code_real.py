"""js_code against real Chromium: errors are tool errors, navigations are followed, wait_for runs after it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import pytest

from crawlkeeper.testing.site import TestSite

from helpers import Server, mcp_server, write_config
from sites import ExtraSite, html_page

pytestmark = pytest.mark.integration

FILL = "document.querySelector('#username').value = 'alice'; document.querySelector('#password').value = 'wonderland';"

SPA = html_page("SPA", """<div id="view"><p>The start view of a single-page application, long enough to be read as
content by the crawler, with a second sentence for good measure.</p></div>
<script>
window.go = function (path) {
  history.pushState({}, '', path);
  setTimeout(function () {
    document.getElementById('view').innerHTML = '<p id="next-view">The next view was rendered by script after ' +
      'a short delay, as single-page applications do after fetching their data.</p>';
  }, 300);
};
</script>""")


@pytest.fixture(scope="module")
def extra() -> Iterator[ExtraSite]:
    with ExtraSite() as site:
        site.page("/spa", SPA)
        site.page("/slow.png", b"not really a png", headers={"content-type": "image/png"}, delay_s=1.5)
        site.page("/onload", html_page("Onload", """<p>A page whose last words are written by its load event,
which waits for a slow image; long enough to count as content for the crawler.</p><img src="/slow.png">
<script>window.addEventListener('load', () => document.body.insertAdjacentHTML('beforeend',
'<p id="loaded">written at the load event</p>'));</script>"""))
        yield site


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    async with mcp_server(write_config(tmp_path_factory.mktemp("js-code"))) as srv:
        yield srv


@pytest.mark.anyio
async def test_a_shadowed_form_submit_is_an_error_quoting_the_javascript_error(
    server: Server, test_site: TestSite
) -> None:
    message = await server.error("crawl_url", {
        "url": test_site.url("/login"), "js_code": FILL + " document.querySelector('form').submit();",
    })
    assert "js_code failed" in message
    assert "TypeError" in message and "submit is not a function" in message
    assert "requestSubmit" in message  # what to do instead


@pytest.mark.anyio
@pytest.mark.parametrize("submit", [
    "document.querySelector('form').requestSubmit();",
    "document.querySelector('#submit').click();",
    "HTMLFormElement.prototype.submit.call(document.querySelector('form'));",
    # The same form without the shadowing control: plain form.submit() works and is followed.
    "document.querySelector('#submit').removeAttribute('id'); document.querySelector('form').submit();",
])
async def test_every_form_style_returns_the_page_the_login_led_to(
    server: Server, test_site: TestSite, submit: str
) -> None:
    created = await server.ok("create_session", {})
    sid = created["session_id"]
    try:
        result = await server.ok("crawl_url", {
            "url": test_site.url("/login"), "session_id": sid, "js_code": FILL + " " + submit, "output": "text",
        })
        assert result["final_url"] == test_site.url("/private"), result["content"][:300]
        assert result["status"] == 200
        assert result["title"] == "Private area"
        assert "Welcome, alice!" in result["content"]
        again = await server.ok("crawl_url", {"url": test_site.url("/private"), "session_id": sid})
        assert "secret-page-for-alice" in again["content"]
    finally:
        await server.ok("close_session", {"session_id": sid})


@pytest.mark.anyio
async def test_location_change_and_a_link_click_are_followed(server: Server, test_site: TestSite) -> None:
    result = await server.ok("crawl_url", {"url": test_site.url("/"), "js_code": "location.href = '/links';"})
    assert result["final_url"] == test_site.url("/links")
    assert result["title"] == "Links"
    clicked = await server.ok("crawl_url", {
        "url": test_site.url("/"), "js_code": "document.querySelector('a[href=\"/long\"]').click();",
    })
    assert clicked["final_url"].startswith(test_site.url("/long"))


@pytest.mark.anyio
async def test_spa_push_state_then_wait_for_what_the_script_produced(server: Server, extra: ExtraSite) -> None:
    result = await server.ok("crawl_url", {
        "url": extra.url("/spa"), "js_code": "window.go('/spa/next');", "wait_for": "css:#next-view",
    })
    assert result["final_url"] == extra.url("/spa/next")
    assert "next view was rendered" in result["content"]


@pytest.mark.anyio
async def test_wait_for_is_checked_after_the_script(server: Server, test_site: TestSite) -> None:
    js = ("setTimeout(() => { const p = document.createElement('p'); p.id = 'made'; "
          "p.textContent = 'made by the script a little later'; document.body.appendChild(p); }, 400);")
    for condition in ("css:#made", "js:() => document.querySelector('#made') !== null"):
        result = await server.ok("crawl_url", {"url": test_site.url("/links"), "js_code": js, "wait_for": condition})
        assert "made by the script" in result["content"], condition


@pytest.mark.anyio
async def test_a_js_condition_never_met_is_an_error_in_time(server: Server, test_site: TestSite) -> None:
    started = time.monotonic()
    message = await server.error("crawl_url", {
        "url": test_site.url("/links"), "js_code": "window.scrollTo(0, 10);", "wait_for": "js:() => false",
        "timeout_s": 2,
    })
    assert time.monotonic() - started < 10
    assert "wait_for" in message and "not met" in message


@pytest.mark.anyio
@pytest.mark.parametrize(("js", "expected"), [
    ("Promise.reject(new Error('rejected on purpose'));", "rejected on purpose"),
    ("await fetch('/nowhere').then((r) => { throw new RangeError('bad answer ' + r.status); });",
     "RangeError: bad answer 404"),
    ("this is not javascript", "SyntaxError"),
    ("throw 'a plain string';", "a plain string"),
])
async def test_script_failures_are_tool_errors(server: Server, test_site: TestSite, js: str, expected: str) -> None:
    message = await server.error("crawl_url", {"url": test_site.url("/links"), "js_code": js})
    assert "js_code failed" in message and expected in message


@pytest.mark.anyio
async def test_the_second_script_of_a_list_runs_on_the_page_the_first_led_to(
    server: Server, test_site: TestSite
) -> None:
    result = await server.ok("crawl_url", {
        "url": test_site.url("/"),
        "js_code": ["location.href = '/links';", "document.body.insertAdjacentHTML('beforeend', "
                    "'<p>second script ran on ' + location.pathname + '</p>');"],
    })
    assert result["final_url"] == test_site.url("/links")
    assert "second script ran on /links" in result["content"]


@pytest.mark.anyio
async def test_wait_until_per_call(server: Server, extra: ExtraSite) -> None:
    early = await server.ok("crawl_url", {"url": extra.url("/onload"), "wait_until": "domcontentloaded"})
    assert "written at the load event" not in early["content"]
    loaded = await server.ok("crawl_url", {"url": extra.url("/onload"), "wait_until": "load"})
    assert "written at the load event" in loaded["content"]
    message = await server.error("crawl_url", {"url": extra.url("/onload"), "wait_untill": "load"})
    assert "wait_untill" in message
