"""A call's ``js_code`` in a real page: errors reported, navigations followed, ``wait_for`` checked after it.

crawl4ai swallows a script's exception and evaluates ``wait_for`` *before* the script, so a login script that
throws (``form.submit()`` shadowed by a button with ``id="submit"``) returned the unchanged page as a success.
Here every script runs inside a wrapper that reports its exception (or an unhandled promise rejection it
caused) and watches the Navigation API's ``navigate`` event, which Chromium fires synchronously for every
navigation a script starts (``form.submit()``, ``requestSubmit()``, a click on a submit button or a link,
``location.href = ...``, ``history.pushState``). A cross-document navigation is then followed to its committed
document and its ``wait_until`` state; only then is ``wait_for`` checked, and a condition never met is an error.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from .errors import CrawlError, PageTimeout, first_line
from .logs import safe_url

#: The user's script is pasted (not passed as a string to ``new Function``): pages with a CSP that forbids
#: eval must still run it. Two timer turns let an unhandled rejection of the script be reported.
_WRAPPER = """async () => {
  let nav = null;
  const onNavigate = (e) => { nav = nav || {url: e.destination.url, same: e.destination.sameDocument}; };
  const onUnload = () => { nav = nav || {url: null, same: false}; };
  let rejected = null;
  const onRejection = (e) => { if (rejected === null) rejected = e.reason; };
  const describe = (err) => {
    try {
      if (err instanceof Error) return `${err.name}: ${err.message}`;
      return `uncaught ${typeof err}: ${String(err)}`;
    } catch (e) { return 'an error that cannot be printed'; }
  };
  if (window.navigation) window.navigation.addEventListener('navigate', onNavigate);
  window.addEventListener('beforeunload', onUnload);
  window.addEventListener('unhandledrejection', onRejection);
  try {
    await (async () => {
__SCRIPT__
    })();
    await new Promise((resolve) => setTimeout(resolve, 0));
    await new Promise((resolve) => setTimeout(resolve, 0));
  } catch (err) {
    return {error: describe(err), nav};
  } finally {
    if (window.navigation) window.navigation.removeEventListener('navigate', onNavigate);
    window.removeEventListener('beforeunload', onUnload);
    window.removeEventListener('unhandledrejection', onRejection);
  }
  if (rejected !== null) return {error: describe(rejected) + ' (an unhandled promise rejection)', nav};
  return {error: null, nav};
}"""

_NAVIGATED = ("Execution context was destroyed", "because of a navigation", "frame was detached")


class ScriptError(CrawlError):
    """A call's ``js_code`` threw, or did not parse."""


class _NavigationWatch:
    """Counts main-frame commits (cross- or same-document) and failed navigation requests of a page."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.commits = 0
        self.failures: list[str] = []
        self.changed = asyncio.Event()
        page.on("framenavigated", self._on_navigated)
        page.on("requestfailed", self._on_failed)

    def _on_navigated(self, frame: Any) -> None:
        if frame == self.page.main_frame:
            self.commits += 1
            self.changed.set()

    def _on_failed(self, request: Any) -> None:
        try:
            if request.is_navigation_request() and request.frame == self.page.main_frame:
                self.failures.append(str(request.failure or "failed"))
                self.changed.set()
        except Exception:
            pass

    @property
    def events(self) -> int:
        return self.commits + len(self.failures)

    def close(self) -> None:
        for event, handler in (("framenavigated", self._on_navigated), ("requestfailed", self._on_failed)):
            try:
                self.page.remove_listener(event, handler)
            except Exception:
                pass


def remaining(deadline: float) -> float:
    """Seconds left before ``deadline`` (``loop.time()`` based), never below a small floor."""
    return max(0.05, deadline - asyncio.get_running_loop().time())


async def run_scripts(page: Any, js_code: str | Sequence[str], *, wait_until: str, deadline: float) -> bool:
    """Run each script in order; follow a navigation it starts to its settled document.

    Returns whether any script navigated. Raises :class:`ScriptError` for a script that throws (its first
    line quoted) and :class:`PageTimeout` when a navigation it started does not settle before ``deadline``.
    """
    scripts = [js_code] if isinstance(js_code, str) else list(js_code)
    navigated = False
    watch = _NavigationWatch(page)
    try:
        for index, script in enumerate(scripts, 1):
            before = watch.events
            where = f" (script {index} of {len(scripts)})" if len(scripts) > 1 else ""
            try:
                # A second beyond the deadline: on a slow machine the load may have used the whole budget, and
                # a script that never ends is stopped by the caller's watchdog anyway (with its page).
                outcome = await asyncio.wait_for(
                    page.evaluate(_WRAPPER.replace("__SCRIPT__", script)), remaining(deadline) + 1.0
                )
            except asyncio.TimeoutError:
                raise PageTimeout(f"js_code{where} did not finish in time on {safe_url(page.url)}") from None
            except Exception as exc:
                message = first_line(exc)
                if any(marker in message for marker in _NAVIGATED):
                    outcome = {"error": None, "nav": {"url": None, "same": False}}  # it navigated mid-script
                else:
                    raise ScriptError(_script_error(message, where, page.url, syntax=True)) from None
            outcome = outcome if isinstance(outcome, dict) else {"error": None, "nav": None}
            if outcome.get("error"):
                raise ScriptError(_script_error(str(outcome["error"]), where, page.url))
            nav = outcome.get("nav")
            if nav and not nav.get("same"):
                await _settle(page, watch, before, wait_until, deadline)
                navigated = True
            elif nav:
                navigated = True  # same document (pushState, a fragment): nothing to load
    finally:
        watch.close()
    return navigated


async def _settle(page: Any, watch: _NavigationWatch, before: int, wait_until: str, deadline: float) -> None:
    """Wait for the navigation a script started to commit, then for the new document's ``wait_until`` state."""
    loop = asyncio.get_running_loop()
    while watch.events == before:
        if loop.time() >= deadline:
            raise PageTimeout(f"the navigation js_code started from {safe_url(page.url)} did not finish in time")
        watch.changed.clear()
        try:
            await asyncio.wait_for(watch.changed.wait(), remaining(deadline))
        except asyncio.TimeoutError:
            continue
    if watch.commits == 0 and watch.failures:
        # A failed navigation request (refused by the egress proxy, connection refused ...) leaves the old
        # document or an error page; what the page shows is reported by the caller's checks.
        return
    try:
        await page.wait_for_load_state(wait_until, timeout=remaining(deadline) * 1000)
    except Exception as exc:
        if "Timeout" in first_line(exc):
            raise PageTimeout(
                f"the page js_code led to ({safe_url(page.url)}) did not reach '{wait_until}' in time"
            ) from None
        # The document was replaced again meanwhile (a redirect by script): wait for that one.
        await page.wait_for_load_state(wait_until, timeout=remaining(deadline) * 1000)


def _script_error(message: str, where: str, url: str, *, syntax: bool = False) -> str:
    detail = message.strip()
    for prefix in ("Error: page.evaluate: ", "page.evaluate: "):
        if detail.startswith(prefix):
            detail = detail[len(prefix):]
    detail = detail[:300]
    hint = "Fix the script and call again"
    if "submit is not a function" in detail:
        hint = ("A form control named or with id 'submit' hides form.submit(): use form.requestSubmit() or "
                "click the submit button instead")
    elif syntax and "SyntaxError" in detail:
        hint = "js_code is not valid JavaScript; fix it and call again"
    return f"js_code failed{where}: {detail}; the page stayed at {safe_url(url)}. {hint}"


def wait_kind(condition: str) -> tuple[str, str]:
    """``("css", selector)`` or ``("js", expression)``, following crawl4ai's rules for unprefixed values."""
    text = condition.strip()
    if text.startswith("css:"):
        return "css", text[4:].strip()
    if text.startswith("js:"):
        return "js", text[3:].strip()
    if text.startswith(("()", "function", "async")):
        return "js", text
    return "css", text


async def wait_for_condition(page: Any, condition: str, deadline: float) -> None:
    """Wait until ``condition`` holds on the page (its current document); an error if it never does."""
    kind, expr = wait_kind(condition)
    # At least half a second to look, even when loading used up the budget: "not met" must mean not met.
    timeout_ms = max(0.5, remaining(deadline)) * 1000
    try:
        if kind == "css":
            await page.wait_for_selector(expr, state="attached", timeout=timeout_ms)
        else:
            # A bare expression or a function: both are waited for until truthy.
            await page.wait_for_function(expr, timeout=timeout_ms, polling=100)
    except Exception as exc:
        message = first_line(exc)
        if "Timeout" in message:
            raise CrawlError(
                f"the wait_for condition {json.dumps(condition)[:200]} was not met in time on "
                f"{safe_url(page.url)} (check it, or raise timeout_s)"
            ) from None
        raise CrawlError(
            f"the wait_for condition {json.dumps(condition)[:200]} is not valid: {message[:200]}"
        ) from None
