"""``split_at`` and ``ContentPager``: chunk boundaries, cursors, expiry and edge cases."""

from __future__ import annotations

import time
from typing import Any

import pytest

from crawlkeeper import CrawlError
from crawlkeeper.paging import ContentPager, split_at

URL = "https://example.com/doc"


def read_all(pager: ContentPager, content: str, max_chars: int, url: str = URL) -> list[str]:
    chunk, cursor = pager.first(url, content, max_chars, {"title": "t"})
    chunks = [chunk]
    while cursor is not None:
        chunk, cursor, meta = pager.next(cursor, url, max_chars)
        assert meta == {"title": "t"}
        chunks.append(chunk)
        assert len(chunks) <= len(content) + 1
    return chunks


# -- split_at ------------------------------------------------------------------------------------------------


def test_split_at_short_and_exact_fit() -> None:
    assert split_at("", 0, 10) == 0
    assert split_at("short", 0, 10) == 5
    assert split_at("x" * 10, 0, 10) == 10  # exact fit: one chunk
    assert split_at("x" * 20, 10, 10) == 20  # the rest fits exactly


def test_split_at_without_separators_cuts_hard() -> None:
    assert split_at("x" * 25, 0, 10) == 10
    assert split_at("x" * 25, 10, 10) == 20


def test_split_at_prefers_paragraphs_then_lines_then_sentences_then_spaces() -> None:
    text = "aaaaaa\n\nbb\ncc. dd ee" + "z" * 50
    assert split_at(text, 0, 12) == len("aaaaaa\n\n")
    assert split_at("aaaaaa\nbb cc" + "z" * 50, 0, 12) == len("aaaaaa\n")
    assert split_at("aaaaaa. b cc" + "z" * 50, 0, 12) == len("aaaaaa. ")
    assert split_at("aaaaa. bb cc" + "z" * 50, 0, 12) == len("aaaaa. bb ")  # ". " lies in the first half
    assert split_at("aaaaaa bbbbb" + "z" * 50, 0, 12) == len("aaaaaa ")


def test_split_at_ignores_separators_in_the_first_half() -> None:
    text = "a\n\n" + "b" * 100
    assert split_at(text, 0, 20) == 20  # the break at 3 would make a tiny chunk


def test_split_at_never_returns_an_empty_chunk() -> None:
    text = "\n\n" * 50
    for start in range(0, 100, 7):
        assert split_at(text, start, 4) > start


# -- ContentPager ------------------------------------------------------------------------------------------------


def test_content_that_fits_needs_no_cursor() -> None:
    pager = ContentPager()
    assert pager.first(URL, "hello", 200, {}) == ("hello", None)
    assert pager.first(URL, "x" * 200, 200, {}) == ("x" * 200, None)  # exact fit
    assert pager._entries == {}  # nothing stored for content that fits


@pytest.mark.parametrize("max_chars", [200, 333, 1000])
def test_chunks_reassemble_the_content(max_chars: int) -> None:
    content = "".join(f"Paragraph {i} has a few words in it.\n\n" for i in range(300))
    chunks = read_all(ContentPager(), content, max_chars)
    assert "".join(chunks) == content
    assert all(0 < len(c) <= max_chars for c in chunks)
    assert all(c.endswith("\n\n") for c in chunks[:-1])


def test_exact_multiple_ends_without_an_empty_chunk() -> None:
    content = "y" * 600
    chunks = read_all(ContentPager(), content, 200)
    assert chunks == ["y" * 200] * 3


def test_unicode_content_is_not_split_inside_a_character() -> None:
    content = "é" * 450 + "🙂" * 50
    chunks = read_all(ContentPager(), content, 200)
    assert "".join(chunks) == content


def test_cursor_is_reusable_and_chunk_size_can_change() -> None:
    pager = ContentPager()
    content = "w" * 1000
    _, cursor = pager.first(URL, content, 200, {})
    assert cursor is not None
    again = pager.next(cursor, URL, 200)
    assert pager.next(cursor, URL, 200) == again  # the same cursor gives the same chunk
    bigger, rest, _ = pager.next(cursor, URL, 5000)
    assert bigger == "w" * 800 and rest is None


def test_cursor_for_another_url_is_refused() -> None:
    pager = ContentPager()
    _, cursor = pager.first(URL, "z" * 1000, 200, {})
    assert cursor is not None
    with pytest.raises(CrawlError) as info:
        pager.next(cursor, "https://example.com/other", 200)
    assert URL in str(info.value) and "same url" in str(info.value)


@pytest.mark.parametrize("cursor", ["", "nonsense", "abc.12", "abc.", "abc.-5"])
def test_unknown_or_malformed_cursor_is_refused(cursor: str) -> None:
    pager = ContentPager()
    with pytest.raises(CrawlError, match="unknown or has expired"):
        pager.next(cursor, URL, 200)


def test_malformed_offset_on_a_known_token_is_refused() -> None:
    pager = ContentPager()
    _, cursor = pager.first(URL, "q" * 1000, 200, {})
    assert cursor is not None
    token = cursor.split(".")[0]
    for bad in (f"{token}.x", f"{token}.", f"{token}"):
        with pytest.raises(CrawlError, match="unknown or has expired"):
            pager.next(bad, URL, 200)


def test_cursors_expire() -> None:
    pager = ContentPager(ttl_s=60)
    _, cursor = pager.first(URL, "e" * 1000, 200, {})
    assert cursor is not None
    pager.next(cursor, URL, 200)
    short = ContentPager(ttl_s=0.01)
    _, cursor = short.first(URL, "e" * 1000, 200, {})
    assert cursor is not None
    time.sleep(0.03)
    with pytest.raises(CrawlError, match="expired"):
        short.next(cursor, URL, 200)


def test_oldest_entries_are_dropped_beyond_max_entries() -> None:
    pager = ContentPager(max_entries=2)
    cursors: list[Any] = [pager.first(f"{URL}/{i}", "m" * 1000, 200, {})[1] for i in range(3)]
    with pytest.raises(CrawlError):
        pager.next(cursors[0], f"{URL}/0", 200)
    for i in (1, 2):
        pager.next(cursors[i], f"{URL}/{i}", 200)


def test_cursors_are_unguessable() -> None:
    pager = ContentPager()
    tokens = {pager.first(URL, "n" * 1000, 200, {})[1].split(".")[0] for _ in range(20)}  # type: ignore[union-attr]
    assert len(tokens) == 20
    assert all(len(t) >= 12 for t in tokens)
