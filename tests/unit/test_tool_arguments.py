"""Tool arguments: one declaration (CrawlOptions), per-call wait_until, and nothing silently ignored."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from support import error_text

from crawlkeeper.options import CALL_OPTIONS, CrawlOptions

SITE = "https://example.com"
CRAWL_TOOLS = ("crawl_url", "crawl_many")


@pytest.fixture
def site(crawlkeeper_browser: Any, page: Callable[[str, str], str]) -> Any:
    crawlkeeper_browser.add_page(f"{SITE}/a", page("A", "<p>Page A</p>"))
    return crawlkeeper_browser


def _arguments(tool: str) -> dict[str, Any]:
    return {"urls": [f"{SITE}/a"]} if tool == "crawl_many" else {"url": f"{SITE}/a"}


@pytest.mark.anyio
async def test_every_tool_schema_forbids_unknown_arguments(crawlkeeper_client: Callable[..., Any]) -> None:
    async with crawlkeeper_client() as client:
        tools = (await client.list_tools()).tools
    assert tools
    for tool in tools:
        assert tool.input_schema.get("additionalProperties") is False, tool.name


@pytest.mark.anyio
@pytest.mark.parametrize("tool", CRAWL_TOOLS)
async def test_crawl_options_are_declared_once(crawlkeeper_client: Callable[..., Any], tool: str) -> None:
    async with crawlkeeper_client() as client:
        schema = {t.name: t for t in (await client.list_tools()).tools}[tool].input_schema
    for name in CALL_OPTIONS:
        prop = schema["properties"][name]
        assert prop["description"] == CrawlOptions.model_fields[name].description, name
        assert prop["default"] is None, name  # unset: the config/profile default applies
    assert "enum" in str(schema["properties"]["wait_until"])
    # config-only options are not tool arguments
    assert not {"delay_s", "max_page_mb", "respect_robots"} & set(schema["properties"])


@pytest.mark.anyio
@pytest.mark.parametrize("tool", CRAWL_TOOLS)
async def test_an_unknown_argument_is_an_error_naming_it(
    crawlkeeper_client: Callable[..., Any], site: Any, tool: str
) -> None:
    async with crawlkeeper_client() as client:
        result = await client.call_tool(tool, {**_arguments(tool), "wait_untill": "load"})
    message = error_text(result)
    assert "wait_untill" in message and "did you mean 'wait_until'" in message
    assert not site.navigations, "the call ran although it had an unknown argument"


@pytest.mark.anyio
@pytest.mark.parametrize(("argument", "value"), [
    ("wait_until", "loaded"), ("output", "pdf"), ("timeout_s", 0), ("max_chars", 10), ("timeout_s", 601),
])
async def test_an_invalid_value_is_an_error_naming_the_argument(
    crawlkeeper_client: Callable[..., Any], site: Any, argument: str, value: Any
) -> None:
    async with crawlkeeper_client() as client:
        result = await client.call_tool("crawl_url", {"url": f"{SITE}/a", argument: value})
    assert argument in error_text(result)
    assert not site.navigations


@pytest.mark.anyio
async def test_errors_never_echo_argument_values(crawlkeeper_client: Callable[..., Any]) -> None:
    cookie = {"name": "sid", "value": "SECRET-COOKIE-VALUE", "url": f"{SITE}/", "sameSite": "Sometimes"}
    async with crawlkeeper_client() as client:
        result = await client.call_tool("create_session", {"cookies": [cookie]})
    message = error_text(result)
    assert "sameSite" in message
    assert "SECRET-COOKIE-VALUE" not in message


@pytest.mark.anyio
@pytest.mark.parametrize("wait_until", ["load", "networkidle", "domcontentloaded"])
async def test_wait_until_per_call_reaches_the_crawl(
    crawlkeeper_client: Callable[..., Any], crawlkeeper_app: Any, site: Any, monkeypatch: pytest.MonkeyPatch,
    wait_until: str,
) -> None:
    seen: list[str] = []
    crawl = crawlkeeper_app.backend.crawl

    async def recording(page: Any, url: str, options: CrawlOptions) -> Any:
        seen.append(options.wait_until)
        return await crawl(page, url, options)

    monkeypatch.setattr(crawlkeeper_app.backend, "crawl", recording)
    async with crawlkeeper_client() as client:
        one = await client.call_tool("crawl_url", {"url": f"{SITE}/a", "wait_until": wait_until})
        many = await client.call_tool("crawl_many", {"urls": [f"{SITE}/a"], "wait_until": wait_until})
        default = await client.call_tool("crawl_url", {"url": f"{SITE}/a"})
    assert not (one.is_error or many.is_error or default.is_error)
    assert seen == [wait_until, wait_until, "domcontentloaded"]
