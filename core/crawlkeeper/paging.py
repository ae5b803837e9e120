"""Paging long content: ``max_chars`` per call, an opaque ``next_cursor`` to fetch the rest.

The full content of a crawl is kept server-side for a while, so following pages are consistent with the first
(the page is not crawled again) and cost nothing. Chunks end at a paragraph or line break when one is near.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from .errors import CrawlError


@dataclass
class _Entry:
    url: str
    content: str
    meta: dict[str, object]
    created: float = field(default_factory=time.monotonic)


def split_at(content: str, start: int, max_chars: int) -> int:
    """Where the chunk starting at ``start`` ends: a paragraph/line break in its last half, else ``max_chars``."""
    end = start + max_chars
    if end >= len(content):
        return len(content)
    window_start = start + max_chars // 2
    for sep in ("\n\n", "\n", ". ", " "):
        cut = content.rfind(sep, window_start, end)
        if cut != -1:
            return cut + len(sep)
    return end


class ContentPager:
    def __init__(self, *, max_entries: int = 64, ttl_s: float = 1800.0) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def first(self, url: str, content: str, max_chars: int, meta: dict[str, object]) -> tuple[str, str | None]:
        """The first chunk and the cursor for the next one (None when it all fits)."""
        end = split_at(content, 0, max_chars)
        if end >= len(content):
            return content, None
        token = secrets.token_urlsafe(9)
        self._entries[token] = _Entry(url, content, meta)
        self._trim()
        return content[:end], f"{token}.{end}"

    def next(self, cursor: str, url: str, max_chars: int) -> tuple[str, str | None, dict[str, object]]:
        """The chunk at ``cursor``, the following cursor (None at the end) and the first call's metadata."""
        token, _, offset_text = cursor.partition(".")
        entry = self._entries.get(token)
        if entry is None or time.monotonic() - entry.created > self.ttl_s or not offset_text.isdigit():
            raise CrawlError(
                f"cursor {cursor!r} is unknown or has expired; call crawl_url again without cursor to start over"
            )
        if entry.url != url:
            raise CrawlError(f"cursor {cursor!r} belongs to {entry.url}, not {url}; pass the same url")
        start = int(offset_text)
        end = split_at(entry.content, start, max_chars)
        self._entries.move_to_end(token)
        if end >= len(entry.content):
            return entry.content[start:], None, entry.meta
        return entry.content[start:end], f"{token}.{end}", entry.meta

    def _trim(self) -> None:
        now = time.monotonic()
        for token in [t for t, e in self._entries.items() if now - e.created > self.ttl_s]:
            del self._entries[token]
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
