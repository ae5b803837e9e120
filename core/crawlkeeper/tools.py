"""Extra MCP tools contributed by plugins through ``crawlkeeper_register_tools``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import PluginError

RESERVED = frozenset(
    {"crawl_url", "crawl_many", "create_session", "list_sessions", "close_session", "list_profiles", "screenshot",
     "extract", "crawl_site"}
)


@dataclass
class ToolSpec:
    fn: Callable[..., Any]
    name: str
    description: str | None
    read_only: bool


class ToolRegistry:
    """Where plugins add tools. A tool is an ``async def`` with typed arguments; it may take ``app``
    (the running :class:`~crawlkeeper.app.App`) and ``principal`` (the calling :class:`~crawlkeeper.Principal`)
    as keywords, which are injected and hidden from clients."""

    def __init__(self) -> None:
        self.tools: dict[str, ToolSpec] = {}

    def add(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        read_only: bool = False,
    ) -> None:
        tool_name = name or fn.__name__
        if tool_name in RESERVED or tool_name in self.tools:
            raise PluginError(f"a tool named '{tool_name}' already exists; pick another name")
        self.tools[tool_name] = ToolSpec(fn, tool_name, description or fn.__doc__, read_only)
