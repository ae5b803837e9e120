"""The ``extract`` tool: structured items from a page with a crawl4ai ``JsonCssExtractionStrategy`` schema.

The schema is validated by :class:`ExtractSchema` before any page is loaded, so a typo is an error naming the
field at fault instead of an empty result. Extraction runs on the page's HTML (as rendered, after js_code and
wait_for) in a worker thread, with crawl4ai's own strategy; items beyond the cap are counted, not built.
No LLM-based extraction here: a plugin can add one through ``crawlkeeper_register_tools``.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .app.runner import PageTarget
from .errors import CrawlError
from .logs import safe_url
from .options import CrawlOptions

SingleStep = Literal["text", "attribute", "html", "regex"]
FieldType = Literal["text", "attribute", "html", "regex", "nested", "list", "nested_list"]
_CONTAINERS = frozenset({"nested", "list", "nested_list"})


def _check_selector(selector: str) -> str:
    import soupsieve

    try:
        soupsieve.compile(selector)
    except Exception as exc:
        raise ValueError(f"{selector!r} is not a valid CSS selector ({str(exc).splitlines()[0][:120]})") from None
    return selector


class ExtractField(BaseModel):
    """One field of a crawl4ai CSS extraction schema."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="Key of the value in each item.")
    type: FieldType | list[SingleStep] = Field(
        description="text, attribute, html, regex (a list chains steps, e.g. ['text', 'regex']), or nested "
        "(one sub-item), list (sub-items of 'fields' read from each match), nested_list."
    )
    selector: str | None = Field(None, description="CSS selector inside the item; none: the item itself.")
    attribute: str | None = Field(None, description="Attribute to read, for type 'attribute'.")
    pattern: str | None = Field(None, description="Regular expression, for type 'regex'.")
    group: int | str = Field(1, description="Group of the regex match to keep.")
    transform: Literal["lowercase", "uppercase", "strip"] | None = None
    default: Any = Field(None, description="Value when nothing matches.")
    source: str | None = Field(None, description="'+tag.class': read from the next sibling matching this.")
    fields: list[ExtractField] | None = Field(None, description="Sub-fields of nested, list and nested_list.")

    @field_validator("selector")
    @classmethod
    def _valid_selector(cls, value: str | None) -> str | None:
        return None if value is None else _check_selector(value)

    @field_validator("pattern")
    @classmethod
    def _valid_pattern(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    @field_validator("source")
    @classmethod
    def _valid_source(cls, value: str | None) -> str | None:
        if value is not None and not value.strip().startswith("+"):
            raise ValueError("source must look like '+tr' or '+tr.subtext' (the next sibling to read from)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ExtractField:
        steps = self.type if isinstance(self.type, list) else [self.type]
        if not steps:
            raise ValueError(f"field '{self.name}': type is an empty list")
        if "attribute" in steps and not self.attribute:
            raise ValueError(f"field '{self.name}' of type attribute needs 'attribute' (the attribute's name)")
        if "regex" in steps and not self.pattern:
            raise ValueError(f"field '{self.name}' of type regex needs 'pattern'")
        container = isinstance(self.type, str) and self.type in _CONTAINERS
        if container and not self.fields:
            raise ValueError(f"field '{self.name}' of type {self.type} needs a non-empty 'fields' list")
        if container and not self.selector:
            raise ValueError(f"field '{self.name}' of type {self.type} needs 'selector'")
        if not container and self.fields:
            raise ValueError(f"field '{self.name}': 'fields' is only for types nested, list and nested_list")
        return self


class ExtractSchema(BaseModel):
    """A crawl4ai ``JsonCssExtractionStrategy`` schema: one item per ``baseSelector`` match."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("items", description="A name for what is extracted.")
    baseSelector: str = Field(min_length=1, description="CSS selector of one item (e.g. 'div.product').")
    baseFields: list[ExtractField] = Field(
        default_factory=list, description="Fields read from the item element itself (e.g. its attributes)."
    )
    fields: list[ExtractField] = Field(min_length=1, description="Fields of each item.")

    @field_validator("baseSelector")
    @classmethod
    def _valid_base(cls, value: str) -> str:
        return _check_selector(value)


def extract_items(html: str, url: str, schema: ExtractSchema, max_items: int) -> tuple[list[dict[str, Any]], int]:
    """Items of ``html`` per ``schema``: at most ``max_items``, and how many the page had in all."""
    from crawl4ai import JsonCssExtractionStrategy

    class _Capped(JsonCssExtractionStrategy):  # type: ignore[misc]
        total = 0

        def _get_base_elements(self, parsed_html: Any, selector: str) -> Any:
            elements = super()._get_base_elements(parsed_html, selector)
            self.total = len(elements)
            return elements[:max_items]  # items beyond the cap are counted, never built

    strategy = _Capped(schema.model_dump(exclude_none=True, exclude_defaults=False), verbose=False)
    items = strategy.extract(url, html)
    return items, strategy.total


async def extract(
    target: PageTarget,
    url: str,
    schema: ExtractSchema,
    *,
    max_items: int | None = None,
    **arguments: Any,
) -> dict[str, Any]:
    """Load ``url`` on ``target`` like ``crawl_url`` (session or pooled page, merge pipeline, egress policy), then
    extract."""

    async def work(page: Any, options: CrawlOptions) -> tuple[Any, str]:
        loaded = await target.backend.load(page, url, options)
        return loaded, await page.content()

    (loaded, html), options = await target.run(url, work, arguments)
    cap = min(max_items or options.max_extract_items, options.max_extract_items)
    try:
        items, total = await asyncio.to_thread(extract_items, html, loaded.final_url, schema, cap)
    except Exception as exc:  # a selector soupsieve accepts but the extraction cannot apply
        raise CrawlError(f"extraction failed on {safe_url(url)}: {type(exc).__name__}: {str(exc)[:200]}") from None
    return {
        "url": loaded.url,
        "final_url": loaded.final_url,
        "status": loaded.status,
        "title": loaded.title,
        "items": items,
        "count": len(items),
        "total": total,
        "dropped": max(0, total - len(items)),
        "session_id": target.session_id,
    }
