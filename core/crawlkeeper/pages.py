"""What a crawl produces, and the page-level checks shared by every browser: page state, size, scripts, text."""

from __future__ import annotations

import asyncio
import re
import weakref
from dataclasses import dataclass, field
from typing import Any

from .errors import CrawlError
from .logs import safe_url


@dataclass
class PageResult:
    """What one crawl produced, before it is shaped into a tool result."""

    url: str
    final_url: str
    status: int | None
    title: str
    html: str
    markdown: str
    cleaned_html: str  # the (selected) content as HTML; ``text`` output is derived from it on demand
    links: list[dict[str, str]] = field(default_factory=list)


@dataclass
class PageLoad:
    """A page loaded for a tool that reads it itself (screenshot, extract): where it ended and how."""

    url: str
    final_url: str
    status: int | None
    title: str


_PARK_TIMEOUT_S = 5.0


@dataclass
class _PageState:
    status: int | None = None
    max_bytes: int | None = None
    too_large: int | None = None
    refused: str | None = None  # the egress proxy refused a hop of the page's navigation (its reason code)
    refused_message: str | None = None  # ... and its message
    script: tuple[Any, str | None, str, float] | None = None  # (js_code, wait_for, wait_until, deadline)
    script_error: CrawlError | None = None
    navigated: bool = False  # js_code navigated: the status is the new document's


async def _run_call_scripts(page: Any, context: Any = None, config: Any = None, **_: Any) -> Any:
    """crawl4ai ``before_retrieve_html`` hook: the call's js_code, then its wait_for (see :mod:`.scripts`)."""
    from .scripts import run_scripts, wait_for_condition

    state = _PAGE_STATE.get(page)
    if state is None or state.script is None:
        return page
    js_code, wait_for, wait_until, deadline = state.script
    try:
        if js_code:
            state.navigated = await run_scripts(page, js_code, wait_until=wait_until, deadline=deadline)
            if state.navigated and not state.too_large:
                await _check_page_size(page)
        if wait_for:
            await wait_for_condition(page, wait_for, deadline)
    except CrawlError as exc:
        state.script_error = exc
        raise
    return page


#: Which setting to change, by the proxy's reason code (when its message did not come through).
_REFUSAL_HINTS = {
    "domain": "the host is not in the profile's allowed_domains",
    "scheme": "the URL scheme is not in [security] allowed_schemes",
    "metadata": "it is a cloud metadata address; only its exact address in [security] allow_private allows it",
    "host": "the host is not valid",
    "address": "its address is private; to allow it, add the host to [security] allow_private",
}


async def _check_page_size(page: Any, context: Any = None, url: str | None = None, response: Any = None,
                           **_: Any) -> Any:
    """crawl4ai ``after_goto`` hook: refuse pages above ``max_page_mb`` before they are processed.

    A declared Content-Length is already enforced as the headers arrive (``new_page``'s response listener);
    this catches pages sent without one, by the size of the document the browser built."""
    state = _PAGE_STATE.get(page)
    if state is None or not state.max_bytes or state.too_large:
        return page
    try:
        size = await page.evaluate("document.documentElement ? document.documentElement.outerHTML.length : 0")
    except Exception:
        return page
    if size > state.max_bytes:
        state.too_large = size
        raise CrawlError("page too large")
    return page


_PAGE_STATE: weakref.WeakKeyDictionary[Any, _PageState] = weakref.WeakKeyDictionary()


async def _page_title(page: Any) -> str:
    """The document's title (crawl4ai reads it from the selected fragment, so css_selector loses it)."""
    try:
        return (await asyncio.wait_for(page.title(), 2)).strip()
    except Exception:
        return ""


_INTERNALS = re.compile(r"\s*(?:Unexpected error in \w+ at line \d+ in \w+ )?\([^()]*site-packages[^()]*\):?")


def _navigation_message(url: str, error: str) -> str:
    """A navigation failure in words, without crawl4ai's internal file paths or the URL's query string."""
    first = _INTERNALS.sub("", error.strip().splitlines()[0] if error.strip() else error).strip(" :")
    detail = f" ({first[:200]})" if first else ""
    for marker, meaning in (
        ("ERR_NAME_NOT_RESOLVED", "the host name does not resolve"),
        ("ERR_CONNECTION_REFUSED", "the server refused the connection"),
        ("ERR_TUNNEL_CONNECTION_FAILED", "the address was refused by the egress policy or is unreachable"),
        ("ERR_CERT", "the TLS certificate is not valid"),
        ("Wait condition failed", "the wait_for condition was not met in time (check it, or raise timeout_s)"),
        ("Timeout", "the page did not load in time"),
    ):
        if marker in error:
            return f"could not load {safe_url(url)}: {meaning}"
    return f"could not load {safe_url(url)}{':' if detail else ''}{detail}"


_BLOCKS = ("p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "section", "article", "header",
           "footer", "pre", "blockquote", "dt", "dd", "table", "ul", "ol")


def html_to_text(html: str) -> str:
    """Visible text of an HTML fragment, one block per line (lxml is a crawl4ai dependency).

    Linear in the page size (tree iteration, not an XPath union, which is quadratic on large pages); callers
    on the event loop run it in a thread.
    """
    if not html.strip():
        return ""
    import lxml.html

    try:
        root = lxml.html.fromstring(html)
    except Exception:
        return ""
    for bad in list(root.iter("script", "style", "noscript", "template")):
        bad.drop_tree()
    for block in root.iter(*_BLOCKS):
        block.tail = "\n" + (block.tail or "")
    lines = (" ".join(line.split()) for line in root.text_content().splitlines())
    return "\n".join(line for line in lines if line)
