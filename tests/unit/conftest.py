"""Shared fixtures for the fast unit tests (fakes only: no Chromium, no network beyond loopback).

The crawlkeeper pytest plugin (``crawlkeeper_browser``, ``crawlkeeper_app``, ``crawlkeeper_client`` ...) is
loaded through its ``pytest11`` entry point; what is here is only what several unit modules share.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CRAWLKEEPER_* variable of the developer's shell may change what a unit test sees."""
    for name in list(os.environ):
        if name.startswith("CRAWLKEEPER_"):
            monkeypatch.delenv(name)


class FakeClock:
    """A list-based clock: ``clock()`` returns ``clock.now[0]``; ``advance`` moves it forward."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = [start]

    def __call__(self) -> float:
        return self.now[0]

    def advance(self, seconds: float) -> float:
        self.now[0] += seconds
        return self.now[0]


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def clocked_app(crawlkeeper_app: Any, fake_clock: FakeClock) -> Any:
    """``crawlkeeper_app`` with the app, the session registry and the TTL plugin (if loaded) on ``fake_clock``."""
    crawlkeeper_app.clock = fake_clock
    crawlkeeper_app.sessions.clock = fake_clock
    ttl = crawlkeeper_app.pm.get_plugin("ttl")
    if ttl is not None:
        ttl.clock = fake_clock
    return crawlkeeper_app


@pytest.fixture
def write_profile(crawlkeeper_app: Any) -> Callable[..., Path]:
    """``write_profile(name, toml_text)`` writes ``<profiles dir>/<name>.toml`` and bumps its mtime, so the
    profiles plugin sees every rewrite as a change (even one within the file system's mtime granularity)."""
    crawlkeeper_app.profiles.refresh_s = 0
    bumps = [0]

    def write(name: str, text: str) -> Path:
        path = Path(crawlkeeper_app.config.profiles_dir) / f"{name}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        bumps[0] += 10
        stamp = path.stat().st_mtime + bumps[0]
        os.utime(path, (stamp, stamp))
        return path

    return write


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo what ``crawlkeeper.logs.setup_logging`` (called by a test or a CLI command) did to logging."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    level = root.level
    names = ("httpx", "httpcore", "asyncio", "mcp.server.lowlevel.server", "crawlkeeper.trace")
    noisy = {name: logging.getLogger(name).level for name in names}
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    for name, lvl in noisy.items():
        logging.getLogger(name).setLevel(lvl)


def result_text(result: Any) -> str:
    """Everything a tool result shows the client: its text blocks and its structured content."""
    parts = [getattr(block, "text", "") for block in result.content]
    parts.append(json.dumps(result.structured_content or {}))
    return "\n".join(parts)


@pytest.fixture
def everything_shown() -> Callable[[Any], str]:
    return result_text


def html_page(title: str, body: str) -> str:
    return f"<html><head><title>{title}</title></head><body>{body}</body></html>"


@pytest.fixture
def page() -> Callable[[str, str], str]:
    """``page(title, body_html)``: a small canned HTML document."""
    return html_page
