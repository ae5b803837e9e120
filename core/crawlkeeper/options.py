"""The validated shapes of crawl options and browser-context options, and the merge that builds them.

One pipeline builds every crawl: core defaults < config file < profile layer < plugin layers (by priority)
< per-call arguments. The merged dict is validated once; an error names the layer that set the bad value.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError

Output = Literal["markdown", "html", "text", "links"]
WaitUntil = Literal["commit", "domcontentloaded", "load", "networkidle"]


class CrawlOptions(BaseModel):
    """Options of one crawl. Every ``crawl_url`` argument but ``url``/``session_id``/``profile``/``cursor``."""

    model_config = ConfigDict(extra="forbid")

    output: Output = Field("markdown", description="Content format: markdown (default), html, text or links.")
    css_selector: str | None = Field(None, description="Only keep content inside this CSS selector.")
    wait_for: str | None = Field(
        None,
        description="Wait for this before reading (after js_code, when given): a CSS selector, 'css:SEL' or "
        "'js:() => bool'. A condition never met is an error.",
    )
    js_code: str | list[str] | None = Field(
        None,
        description="JavaScript run in the page after it loads (a list: one script after the other). A script "
        "that throws is an error; a navigation it starts (form submit, click, location change) is followed.",
    )
    timeout_s: float = Field(30.0, gt=0, le=600, description="Give up on the whole crawl after this many seconds.")
    max_chars: int = Field(20_000, ge=200, le=1_000_000, description="Page the content in chunks of this size.")
    wait_until: WaitUntil = Field(
        "domcontentloaded",
        description="When a page counts as loaded: domcontentloaded (default), load, networkidle (no requests "
        "for 500 ms: for pages that fetch their content) or commit.",
    )
    delay_s: float = Field(0.0, ge=0, le=60, description="Extra wait before reading the page.")
    max_page_mb: float = Field(20.0, gt=0, le=500, description="Refuse pages whose HTML is larger than this.")
    max_screenshot_tiles: int = Field(8, ge=1, le=50, description="Images a full-page screenshot is cut into, at most.")
    max_extract_items: int = Field(1000, ge=1, le=100_000, description="Items extract returns, at most.")
    max_site_pages: int = Field(500, ge=1, le=100_000, description="Pages crawl_site visits, whatever max_pages says.")
    respect_robots: bool = Field(True, description="crawl_site obeys robots.txt (RFC 9309) and its Crawl-delay.")
    per_host_concurrency: int = Field(2, ge=1, le=64, description="crawl_site: pages loaded at once per host.")
    per_host_delay_s: float = Field(0.0, ge=0, le=60, description="crawl_site: pause between two pages of a host.")

    @field_validator("js_code")
    @classmethod
    def _non_empty_js(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and not all(isinstance(s, str) and s.strip() for s in v):
            raise ValueError("every js_code entry must be a non-empty string")
        return v


#: The crawl options a tool call may set (the rest are config and profile settings only). Tool signatures are
#: generated from these fields (:func:`call_parameters`): one declaration for the schema, the docs and the merge.
CALL_OPTIONS = ("output", "css_selector", "wait_for", "wait_until", "js_code", "timeout_s", "max_chars")


def call_parameters(names: Sequence[str] = CALL_OPTIONS) -> list[inspect.Parameter]:
    """Keyword-only tool parameters for the :class:`CrawlOptions` fields ``names``, each optional (None: the
    merged default applies) and carrying the field's type, constraints and description."""
    params = []
    for name in names:
        info = CrawlOptions.model_fields[name]
        inner: Any = info.annotation
        if info.metadata:
            inner = Annotated[(inner, *info.metadata)]
        annotation = Annotated[inner | None, Field(description=info.description)]  # type: ignore[operator]
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation))
    return params


class SecretRef(BaseModel):
    """A secret given by reference: ``{ value_env = "VAR" }`` or ``{ value_file = "PATH" }`` (never the value)."""

    model_config = ConfigDict(extra="forbid")

    value_env: str | None = None
    value_file: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.value_env is None) == (self.value_file is None):
            raise ValueError("give exactly one of value_env or value_file")
        return self


class ContextOptions(BaseModel):
    """Options of one isolated browser context (a session, or a session-less crawl's context)."""

    model_config = ConfigDict(extra="forbid")

    user_agent: str | None = None
    viewport_width: int = Field(1280, ge=200, le=8000)
    viewport_height: int = Field(800, ge=200, le=8000)
    locale: str | None = None
    timezone_id: str | None = Field(None, description="IANA time zone, e.g. Europe/Paris.")
    extra_headers: dict[str, str | SecretRef] = Field(
        default_factory=dict,
        description="Headers for this context's requests: a literal, or a secret by reference "
        "({ value_env = \"VAR\" } / { value_file = \"PATH\" }). Sent only to the context's own sites.",
    )
    header_domains: list[str] = Field(
        default_factory=list,
        description="The sites extra_headers go to (and their subdomains) when [security] allowed_domains is unset.",
    )
    java_script_enabled: bool = True
    ignore_https_errors: bool = False

    def signature(self) -> str:
        """A stable key: contexts with equal options can be shared by session-less crawls."""
        return self.model_dump_json()


SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", "x-api-key"})


class Layer:
    """A named dict of overrides, one step of the merge."""

    __slots__ = ("source", "values")

    def __init__(self, source: str, values: dict[str, Any]) -> None:
        self.source = source
        self.values = values


def merge(model: type[BaseModel], layers: Iterable[Layer], *, what: str) -> Any:
    """Merge ``layers`` (lowest first) key by key and validate the result with ``model`` once.

    A validation error names the key, the value (unless it could be a secret) and the layer that set it.
    """
    merged: dict[str, Any] = {}
    provenance: dict[str, str] = {}
    for layer in layers:
        for key, value in layer.values.items():
            if value is None:
                continue
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                value = {**merged[key], **value}  # headers and similar maps merge per entry
            merged[key] = value
            provenance[key] = layer.source
    try:
        return model.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, merged, provenance, what)) from None


def _explain(exc: ValidationError, merged: dict[str, Any], provenance: dict[str, str], what: str) -> str:
    lines = []
    for err in exc.errors():
        key = str(err["loc"][0]) if err["loc"] else "?"
        source = provenance.get(key, "the defaults")
        shown = "" if key in {"extra_headers", "js_code"} else f" = {merged.get(key)!r}"  # may hold secrets
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown {what} option '{key}' set by {source}")
        else:
            lines.append(f"{key}{shown} set by {source}: {err['msg']}")
    return f"invalid {what} options: " + "; ".join(lines)
