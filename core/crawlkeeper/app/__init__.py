"""The application: config, plugins, browser, sessions, profiles and the crawl pipeline, wired together.

MCP tools and CLI commands are thin layers over :class:`App`; plugins see a narrow handle on it, a
:class:`~crawlkeeper.Server`, in ``crawlkeeper_startup``/``crawlkeeper_shutdown``.

Where a behaviour lives (each part owns its state; :class:`App` builds them and keeps the public methods):

- ``facade``: :class:`App` itself: start-up, shutdown, a browser crash, listing and closing sessions.
- ``layers``: option layers, the one merge of config file, profile, plugin layers and call arguments.
- ``gate``: egress gating, the policy per profile, the egress proxies, the URL check, launching the browser.
- ``logins``: auth methods, running a login, logging a session in again when the site logged it out.
- ``opening``: creating a session (context, headers, ``session_created`` hooks, login, first navigation).
- ``durability``: restoring saved sessions, hibernating idle ones, sweeping expired saved state.
- ``runner``: crawling: the path every page-loading tool takes (``run_on_page``), the ``js_code`` policy,
  ``crawl``/``crawl_many`` and shaping their results.
- ``page_limits``: work on a page under its deadline and meter, abandoning and parking pages.
- ``pool``: the session-less context pool (a context per crawl, wiped before reuse; as many idle as ran at once).
- ``warmup``: the background warm-up (import, launch, the first call's page) after ``initialize``.
- ``contexts``: setting up a context (headers bound to its sites, watched pages, quiet closing).
"""

from .facade import App, cache_dir
from .runner import PageTarget

__all__ = ["App", "PageTarget", "cache_dir"]
