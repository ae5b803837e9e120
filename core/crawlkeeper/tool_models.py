"""The MCP tools' argument types and structured results (pydantic models: what clients see in each tool's input
and output schema)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

# -- result models ----------------------------------------------------------------------------------


class CrawlResult(BaseModel):
    url: str
    final_url: str
    status: int | None
    title: str
    content: str
    output: str
    truncated: bool
    next_cursor: str | None = Field(description="Pass back as cursor (with the same url) for the next chunk.")
    session_id: str | None
    restored: bool | None = Field(None, description="In a session: true when it was brought back from saved state.")
    relogged_in: bool | None = Field(
        None, description="In a session: true when the site had logged it out and it was logged in again."
    )
    note: str | None = Field(None, description="Something the caller should know, e.g. why it was restored.")


class CrawlFailure(BaseModel):
    url: str
    error: str


class CrawlManyResult(BaseModel):
    results: list[CrawlResult | CrawlFailure]


class ScreenshotResult(BaseModel):
    url: str
    final_url: str
    status: int | None
    title: str
    width: int = Field(description="Width of the images, in CSS pixels.")
    height: int = Field(description="Height covered by the images together.")
    page_height: int = Field(description="Height of the page (or the element).")
    tiles: int = Field(description="Images returned: a tall page comes in tiles, top to bottom.")
    omitted_tiles: int = Field(description="Tiles not captured ([crawl] max_screenshot_tiles).")
    omitted_px: int = Field(description="Pixels of the page below the last tile.")
    full_page: bool
    selector: str | None
    session_id: str | None


class ExtractResult(BaseModel):
    url: str
    final_url: str
    status: int | None
    title: str
    items: list[dict[str, Any]] = Field(description="One object per baseSelector match, in page order.")
    count: int = Field(description="Items returned.")
    total: int = Field(description="Items the page had.")
    dropped: int = Field(description="Items not returned (max_items / [crawl] max_extract_items).")
    session_id: str | None


class SitePage(BaseModel):
    url: str
    final_url: str | None = None
    depth: int
    status: int | None
    title: str
    content: str | None = Field(None, description="Truncated to max_chars_per_page (truncated says so).")
    truncated: bool = False
    error: str | None = Field(None, description="Why this page failed (the crawl goes on).")


class SkippedCounts(BaseModel):
    robots: int = Field(description="Disallowed by robots.txt (or its host's robots.txt was unreachable).")
    scope: int = Field(description="Outside the scope or include/exclude globs, or redirected out of it.")
    limit: int = Field(description="Beyond max_pages or max_depth.")
    duplicate: int = Field(description="Another spelling of, or a redirect to, a page already seen.")
    refused: int = Field(description="Refused by the egress policy.")


class CrawlSiteResult(BaseModel):
    url: str
    pages: list[SitePage]
    skipped: SkippedCounts
    session_id: str | None


class CookieRef(BaseModel):
    name: str
    domain: str


class SessionCreated(BaseModel):
    session_id: str
    profile: str | None
    auth: str | None
    url: str
    expires_at: str | None
    cookies: list[CookieRef]


class SessionInfo(BaseModel):
    session_id: str
    owner: str | None = Field(None, description="The owning client's id (only in an admin's all_clients listing).")
    profile: str | None
    created_at: str | None
    last_used_at: str | None
    expires_at: str | None
    url: str | None
    cookies: list[CookieRef]
    state: Literal["active", "hibernated"] = Field(
        "active", description="hibernated: saved, its browser context closed; the next use restores it."
    )
    error: str | None = Field(None, description="Why a saved session cannot be restored (and what to do).")
    endpoint: str | None = Field(
        None, description="The remote browser endpoint holding an active session (with [browser] endpoints; "
        "credentials in its URL masked)."
    )


class SessionList(BaseModel):
    sessions: list[SessionInfo]


class SessionClosed(BaseModel):
    session_id: str
    closed: bool


class ProfileInfo(BaseModel):
    name: str
    description: str


class ProfileList(BaseModel):
    profiles: list[ProfileInfo]


class CookieInput(BaseModel):
    """A cookie in Playwright's format. Without url/domain it applies to the session's url."""

    model_config = {"extra": "forbid"}
    name: str = Field(min_length=1)
    value: str
    url: str | None = None
    domain: str | None = None
    path: str | None = None
    expires: float | None = None
    httpOnly: bool | None = None
    secure: bool | None = None
    sameSite: Literal["Strict", "Lax", "None"] | None = None


# -- argument types ---------------------------------------------------------------------------------

Url = Annotated[str, Field(description="The page to crawl (http or https).", min_length=1, max_length=8192)]
SessionId = Annotated[str | None, Field(description="Crawl inside this session (see create_session).")]
ProfileName = Annotated[str | None, Field(description="Use this profile (see list_profiles).")]
Cursor = Annotated[str | None, Field(description="next_cursor of an earlier call with the same url.")]
