"""The extract tool against the fake browser: schema validation before crawling, items, the cap."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from support import error_text

SITE = "https://example.com"
PRODUCTS = "".join(
    f'<div class="p" data-id="{i}"><h2> Item {i} </h2><a href="/i/{i}">more</a><span class="price">${i}.99</span>'
    f"<ul><li>a{i}</li><li>b{i}</li></ul></div>" for i in range(30)
)
SCHEMA = {
    "name": "products",
    "baseSelector": "div.p",
    "baseFields": [{"name": "id", "type": "attribute", "attribute": "data-id"}],
    "fields": [
        {"name": "title", "selector": "h2", "type": "text"},
        {"name": "href", "selector": "a", "type": "attribute", "attribute": "href"},
        {"name": "price", "selector": ".price", "type": ["text", "regex"], "pattern": r"\$(\d+)"},
        {"name": "first", "selector": "ul", "type": "nested", "fields": [{"name": "li", "selector": "li",
                                                                         "type": "text"}]},
        {"name": "tags", "selector": "li", "type": "list", "fields": [{"name": "tag", "type": "text"}]},
        {"name": "name", "selector": "h2", "type": "html", "transform": "strip"},
    ],
}


@pytest.fixture
def site(crawlkeeper_browser: Any, page: Callable[[str, str], str]) -> Any:
    crawlkeeper_browser.add_page(f"{SITE}/shop", page("Shop", PRODUCTS))
    return crawlkeeper_browser


@pytest.mark.anyio
async def test_extract_returns_items_as_structured_content(crawlkeeper_client: Callable[..., Any], site: Any) -> None:
    async with crawlkeeper_client() as client:
        result = await client.call_tool("extract", {"url": f"{SITE}/shop", "schema": SCHEMA})
    assert not result.is_error, error_text(result)
    data = result.structured_content
    assert (data["count"], data["total"], data["dropped"]) == (30, 30, 0)
    assert data["items"][3] == {
        "id": "3", "title": "Item 3", "href": "/i/3", "price": "3", "first": {"li": "a3"},
        "tags": [{"tag": "a3"}, {"tag": "b3"}], "name": "<h2> Item 3 </h2>",
    }
    assert data["url"] == data["final_url"] == f"{SITE}/shop" and data["title"] == "Shop"


@pytest.mark.anyio
async def test_items_are_capped_and_the_dropped_ones_counted(
    crawlkeeper_client: Callable[..., Any], site: Any
) -> None:
    async with crawlkeeper_client() as client:
        result = await client.call_tool("extract", {"url": f"{SITE}/shop", "schema": SCHEMA, "max_items": 7})
    data = result.structured_content
    assert (data["count"], data["total"], data["dropped"], len(data["items"])) == (7, 30, 23, 7)
    assert [item["id"] for item in data["items"]] == [str(i) for i in range(7)]


@pytest.mark.anyio
async def test_the_config_cap_wins_over_a_larger_max_items(
    crawlkeeper_client: Callable[..., Any], site: Any, crawlkeeper_app: Any
) -> None:
    crawlkeeper_app.config.raw.setdefault("crawl", {})["max_extract_items"] = 5
    async with crawlkeeper_client() as client:
        result = await client.call_tool("extract", {"url": f"{SITE}/shop", "schema": SCHEMA, "max_items": 100})
    assert (result.structured_content["count"], result.structured_content["dropped"]) == (5, 25)


@pytest.mark.anyio
@pytest.mark.parametrize(("change", "named"), [
    ({"fields": [{"name": "x", "type": "attribute", "selector": "a"}]}, "needs 'attribute'"),
    ({"baseSelector": "div..p"}, "baseSelector"),
    ({"fields": [{"name": "x", "type": "txt"}]}, "fields.0.type"),
    ({"fields": [{"name": "x", "type": "list", "selector": "li"}]}, "needs a non-empty 'fields'"),
    ({"fields": [{"name": "x", "type": "regex", "pattern": "(unclosed"}]}, "pattern"),
    ({"fields": []}, "fields"),
    ({"fields": [{"name": "x", "type": "text", "selectr": "h2"}]}, "selectr"),
    ({"baseSelector": None}, "baseSelector"),
])
async def test_an_invalid_schema_is_an_error_naming_the_field_before_any_crawl(
    crawlkeeper_client: Callable[..., Any], site: Any, change: dict[str, Any], named: str
) -> None:
    schema = {**SCHEMA, **change}
    async with crawlkeeper_client() as client:
        result = await client.call_tool("extract", {"url": f"{SITE}/shop", "schema": schema})
    assert named in error_text(result)
    assert not site.navigations

