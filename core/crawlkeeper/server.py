"""The MCP server: thin tool functions that parse arguments, call the :class:`App` and shape results."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, ImageContent, TextContent, ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from . import __version__, calls
from .app import App, PageTarget
from .app.warmup import after_handshake
from .errors import CrawlkeeperError
from .extraction import ExtractSchema, extract
from .logs import scrub, scrub_secrets, secrets_registered
from .options import CALL_OPTIONS, call_parameters
from .principal import LOCAL, Principal
from .screenshots import take_screenshot
from .site_crawl import crawl_site as run_site_crawl
from .tool_models import (
    CookieInput,
    CrawlFailure,
    CrawlManyResult,
    CrawlResult,
    CrawlSiteResult,
    Cursor,
    ExtractResult,
    ProfileList,
    ProfileName,
    ScreenshotResult,
    SessionClosed,
    SessionCreated,
    SessionId,
    SessionList,
    Url,
)

log = logging.getLogger("crawlkeeper.server")
SHUTDOWN_BUDGET_S = 1.8

INSTRUCTIONS = """crawlkeeper crawls web pages in a real headless browser and returns them as markdown, html, text
or links. For pages behind a login, call create_session (with cookies, a profile, or an auth method), then pass
its session_id to crawl_url; calls on one session run in order. Long content is paged: pass next_cursor back as
cursor to read on."""


def _crawl_options(names: tuple[str, ...] = CALL_OPTIONS) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a tool written as ``async def tool(ctx, url, ..., **options)`` the crawl options ``names`` as real,
    typed, documented parameters, generated from :class:`~crawlkeeper.options.CrawlOptions` (one declaration)."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(fn, eval_str=True)
        params = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        extra = call_parameters(names)
        fn.__signature__ = signature.replace(parameters=[*params, *extra])  # type: ignore[attr-defined]
        fn.__annotations__ = {**{p.name: p.annotation for p in params}, **{p.name: p.annotation for p in extra},
                              "return": signature.return_annotation}
        return fn

    return decorate


class _StrictArguments(BaseModel):
    """Mixed into every tool's argument model: an unknown argument is an error naming it (a silently dropped
    ``wait_untill`` would leave the caller believing it applied), and inputs are never echoed (cookie values)."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True, arbitrary_types_allowed=True)

    @model_validator(mode="before")
    @classmethod
    def _known_arguments(cls, data: Any) -> Any:
        if isinstance(data, dict):
            known = {f.alias or name for name, f in cls.model_fields.items()}
            unknown = sorted(str(k) for k in data if k not in known)
            if unknown:
                import difflib

                hints = []
                for name in unknown:
                    close = difflib.get_close_matches(name, known, n=1)
                    hints.append(f"'{name}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
                raise PydanticCustomError(
                    "unknown_argument",
                    "unknown argument(s) {names}; this tool takes: {known}",
                    {"names": ", ".join(hints), "known": ", ".join(sorted(known))},
                )
        return data


def strict_arguments(server: MCPServer) -> None:
    """Make every registered tool refuse unknown arguments (``additionalProperties: false`` in its schema).

    mcp 2.3's ``MCPServer`` builds each tool's argument model from the function signature with extra keys
    ignored and offers no option for it, so the model is swapped for a strict subclass after registration
    (``Tool.fn_metadata.arg_model`` and ``Tool.parameters``; pinned by the unit tests)."""
    for tool in server._tool_manager.list_tools():
        model = tool.fn_metadata.arg_model
        if issubclass(model, _StrictArguments):
            continue
        strict = type(model.__name__, (model, _StrictArguments), {"__module__": model.__module__})
        tool.fn_metadata.arg_model = strict
        tool.parameters = strict.model_json_schema(by_alias=True)


def _errors_as_tool_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn our errors into MCP tool errors the model can read; hide nothing but secrets and tracebacks.

    Over HTTP it also records the tool and its outcome for the access log, and cancels the call when the
    client disconnects."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        info = calls.current()
        if info is not None:
            info.tool = fn.__name__
        try:
            if info is None:
                result = await fn(*args, **kwargs)
            else:
                result = await calls.unless_gone(info, fn(*args, **kwargs))
        except ToolError:
            _outcome(info, "error")
            raise
        except asyncio.CancelledError:  # the MCP session ended (DELETE) or the server is stopping
            _outcome(info, "cancelled")
            raise
        except calls.ClientGone as exc:
            _outcome(info, "cancelled (client gone)")
            raise ToolError(str(exc)) from None
        except CrawlkeeperError as exc:
            _outcome(info, "error")
            raise ToolError(scrub(str(exc))) from None
        except Exception as exc:
            _outcome(info, f"internal error ({type(exc).__name__})")
            log.exception("tool %s failed", fn.__name__)
            raise ToolError(
                f"internal error in {fn.__name__} ({type(exc).__name__}); the server log has the details"
            ) from None
        _outcome(info, "ok")
        return _scrubbed(result)

    return wrapper


def _scrubbed(result: Any) -> Any:
    """``result`` with every registered secret replaced by ``***``: the one seam every tool's result passes
    (crawl content is also scrubbed before it is paged, so no secret is split across two cursor pages)."""
    if not secrets_registered():
        return result
    if isinstance(result, CallToolResult):
        for block in result.content:
            if isinstance(block, TextContent):
                block.text = scrub_secrets(block.text)
        if result.structured_content is not None:
            result.structured_content = scrub_secrets(result.structured_content)
        return result
    if isinstance(result, BaseModel):
        return type(result).model_validate(scrub_secrets(result.model_dump(by_alias=True)))
    return scrub_secrets(result)


def _outcome(info: calls.CallInfo | None, outcome: str) -> None:
    if info is not None:
        info.outcome = outcome


def current_principal(*, authenticated: bool) -> Principal:
    """The client calling a tool: the verified principal over HTTP, the local user over stdio/in-memory.

    ``authenticated`` servers (HTTP) never fall back to the local user: no principal means no call."""
    from mcp.server.auth.middleware.auth_context import get_access_token

    token = get_access_token()
    principal = getattr(token, "principal", None) if token is not None else None
    if isinstance(principal, Principal):
        return principal
    if authenticated:
        raise ToolError("not authenticated: send Authorization: Bearer <token>")
    return LOCAL


def _app(ctx: Context) -> App:
    return ctx.request_context.lifespan_context


def _page_tool(who: Callable[[], Principal]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A tool that works on one page, in a session or a pooled page, written as
    ``async def tool(ctx, url, ..., target: PageTarget, ...)``: MCP sees the arguments ``session_id`` and
    ``profile`` where ``target`` stands, and the tool receives them as a :class:`PageTarget` for the caller."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(fn, eval_str=True)
        params: list[inspect.Parameter] = []
        for p in signature.parameters.values():
            if p.name == "target":
                kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
                params += [inspect.Parameter("session_id", kind, default=None, annotation=SessionId),
                           inspect.Parameter("profile", kind, default=None, annotation=ProfileName)]
            else:
                params.append(p)

        @functools.wraps(fn)
        async def call(**kwargs: Any) -> Any:
            session_id, profile = kwargs.pop("session_id", None), kwargs.pop("profile", None)
            target = _app(kwargs["ctx"]).target(session_id, profile, who())
            return await fn(**kwargs, target=target)

        call.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        call.__annotations__ = {**{p.name: p.annotation for p in params}, "return": signature.return_annotation}
        return call

    return decorate


def build_server(app: App, *, owns_app: bool = True, **mcp_options: Any) -> MCPServer:
    """The MCP server for ``app``. With ``owns_app`` the server's lifespan starts and shuts the app down.

    ``mcp_options`` go to ``MCPServer`` (the HTTP transport passes ``token_verifier`` and ``auth``); a server
    with a token verifier serves only authenticated principals, each seeing only its own sessions."""
    authenticated = mcp_options.get("token_verifier") is not None

    def who() -> Principal:
        return current_principal(authenticated=authenticated)

    @asynccontextmanager
    async def lifespan(_server: MCPServer) -> AsyncIterator[App]:
        if owns_app:
            await app.startup()
        try:
            yield app
        finally:
            if owns_app:
                # Shielded: on SIGTERM the serving task is cancelled, but sessions must still close in order
                # (the MCP client kills the process group about 2 s after closing stdin).
                with anyio.CancelScope(shield=True), anyio.move_on_after(SHUTDOWN_BUDGET_S):
                    await app.shutdown()

    server: MCPServer = MCPServer(
        "crawlkeeper", version=__version__, instructions=INSTRUCTIONS, lifespan=lifespan, **mcp_options
    )
    server.middleware.append(after_handshake(app.start_warm_up))
    read_only = ToolAnnotations(readOnlyHint=True, openWorldHint=True)
    page_tool = _page_tool(who)

    @server.tool(title="Crawl a URL", annotations=read_only)
    @_crawl_options()
    @_errors_as_tool_errors
    @page_tool
    async def crawl_url(
        ctx: Context,
        url: Url,
        target: PageTarget,
        cursor: Cursor = None,
        **options: Any,
    ) -> CrawlResult:
        """Load a page in a real browser and return its content (markdown by default, or html, text, links).

        Long content comes in chunks of max_chars: when truncated is true, call again with the same url and
        cursor=next_cursor. Pass session_id to crawl as a logged-in session created with create_session."""
        return CrawlResult.model_validate(await target.crawl(url, cursor=cursor, **options))

    @server.tool(title="Crawl many URLs", annotations=read_only)
    @_crawl_options()
    @_errors_as_tool_errors
    async def crawl_many(
        ctx: Context,
        urls: Annotated[list[Url], Field(min_length=1, max_length=500, description="Pages to crawl.")],
        session_id: SessionId = None,
        profile: ProfileName = None,
        concurrency: Annotated[int, Field(ge=1, le=32, description="Pages loaded at once.")] = 4,
        **options: Any,
    ) -> CrawlManyResult:
        """Crawl several pages in parallel. Results come in input order; a page that fails gets {url, error}
        in its slot and the others still succeed. Progress notifications are sent as pages complete."""

        async def progress(done: int, total: int, message: str) -> None:
            await ctx.report_progress(done, total, message)

        results = await _app(ctx).crawl_many(
            urls, concurrency=concurrency, progress=progress, session_id=session_id, profile=profile, principal=who(),
            **options,
        )
        return CrawlManyResult(
            results=[CrawlFailure(**r) if "error" in r else CrawlResult.model_validate(r) for r in results]
        )

    @server.tool(title="Screenshot a page", annotations=read_only)
    @_crawl_options(("wait_for", "wait_until", "js_code", "timeout_s"))
    @_errors_as_tool_errors
    @page_tool
    async def screenshot(
        ctx: Context,
        url: Url,
        target: PageTarget,
        full_page: Annotated[bool, Field(description="The whole page, in tiles top to bottom; else the viewport.")]
        = False,
        selector: Annotated[str | None, Field(description="Only this element (CSS selector; its first match).")]
        = None,
        width: Annotated[int | None, Field(ge=200, le=4000, description="Viewport width in px.")] = None,
        height: Annotated[int | None, Field(ge=200, le=4000, description="Viewport height in px.")] = None,
        **options: Any,
    ) -> Annotated[CallToolResult, ScreenshotResult]:
        """Take a PNG screenshot of a page as a real browser renders it (after js_code and wait_for).

        Returns the image(s) and url/final_url/width/height. A full page taller than a model accepts comes as
        several tiles; how much was cut is reported. Pass session_id to see a logged-in page."""
        result, images = await take_screenshot(
            target, url, full_page=full_page, selector=selector, width=width, height=height, **options,
        )
        summary = ScreenshotResult.model_validate(result)
        content: list[Any] = [ImageContent(type="image", data=data, mime_type="image/png") for data in images]
        content.append(TextContent(type="text", text=summary.model_dump_json()))
        return CallToolResult(content=content, structured_content=summary.model_dump(mode="json"))

    @server.tool(name="extract", title="Extract structured items", annotations=read_only)
    @_crawl_options(("wait_for", "wait_until", "js_code", "timeout_s"))
    @_errors_as_tool_errors
    @page_tool
    async def extract_tool(
        ctx: Context,
        url: Url,
        schema: Annotated[ExtractSchema, Field(description="A crawl4ai JsonCssExtractionStrategy schema.")],
        target: PageTarget,
        max_items: Annotated[int | None, Field(ge=1, le=100_000, description="Return at most this many.")] = None,
        **options: Any,
    ) -> ExtractResult:
        """Extract structured items (JSON) from a page with CSS selectors: one item per baseSelector match,
        each with the schema's fields (text, attribute, html, regex, nested, list, nested_list).

        Example schema: {"baseSelector": "div.product", "fields": [{"name": "title", "selector": "h2",
        "type": "text"}, {"name": "link", "selector": "a", "type": "attribute", "attribute": "href"}]}."""
        result = await extract(target, url, schema, max_items=max_items, **options)
        return ExtractResult.model_validate(result)

    @server.tool(title="Crawl a site", annotations=read_only)
    @_crawl_options(("output", "css_selector", "wait_for", "wait_until", "js_code", "timeout_s"))
    @_errors_as_tool_errors
    async def crawl_site(
        ctx: Context,
        url: Url,
        max_pages: Annotated[int, Field(ge=1, le=100_000, description="Pages to crawl at most "
                                        "(also bounded by [crawl] max_site_pages).")] = 50,
        max_depth: Annotated[int, Field(ge=0, le=50, description="Link depth from the start page.")] = 2,
        scope: Annotated[Literal["same-host", "same-domain", "prefix"], Field(
            description="same-host (default), same-domain (subdomains too), or prefix (URLs under the start URL's "
            "folder).")] = "same-host",
        include: Annotated[list[str] | None, Field(description="Only URLs matching one of these globs "
                                                   "(matched against the path and the full URL, e.g. '/docs/*').")]
        = None,
        exclude: Annotated[list[str] | None, Field(description="Skip URLs matching one of these globs.")] = None,
        session_id: SessionId = None,
        profile: ProfileName = None,
        max_chars_per_page: Annotated[int, Field(ge=100, le=200_000, description="Content kept per page.")]
        = 5000,
        concurrency: Annotated[int, Field(ge=1, le=32, description="Pages loaded at once (one at a time in a "
                                          "session).")] = 4,
        **options: Any,
    ) -> CrawlSiteResult:
        """Crawl a website breadth-first from url, following links within scope, politely (robots.txt,
        Crawl-delay, per-host limits). Returns each page (content truncated to max_chars_per_page, or its
        error) and counts of URLs skipped by reason. Progress notifications are sent per page."""

        async def progress(done: int, total: int, message: str) -> None:
            await ctx.report_progress(done, total, message)

        result = await run_site_crawl(
            _app(ctx), url, max_pages=max_pages, max_depth=max_depth, scope=scope, include=include,
            exclude=exclude, session_id=session_id, profile=profile, max_chars_per_page=max_chars_per_page,
            concurrency=concurrency, progress=progress, principal=who(), **options,
        )
        return CrawlSiteResult.model_validate(result)

    @server.tool(title="Create a browser session", annotations=ToolAnnotations(openWorldHint=True))
    @_errors_as_tool_errors
    async def create_session(
        ctx: Context,
        session_id: Annotated[str | None, Field(description="Id to use; generated if absent.")] = None,
        url: Annotated[str | None, Field(description="Open this page after logging in; none: about:blank.")] = None,
        cookies: Annotated[list[CookieInput] | None, Field(description="Cookies to set (values never echoed).")] = None,
        profile: ProfileName = None,
        auth: Annotated[str | None, Field(description="Auth method to log in with (params from the profile).")] = None,
        ttl_s: Annotated[float | None, Field(gt=0, description="Idle time before the session expires.")] = None,
    ) -> SessionCreated:
        """Create an isolated, optionally logged-in browser session: its own cookies, invisible to others.

        Then pass its session_id to crawl_url / crawl_many. Cookie values are never returned."""
        result = await _app(ctx).create_session(
            session_id=session_id, url=url, profile=profile, auth=auth, ttl_s=ttl_s,
            cookies=[c.model_dump(exclude_none=True) for c in cookies or []], principal=who(),
        )
        return SessionCreated.model_validate(result)

    @server.tool(title="List sessions", annotations=ToolAnnotations(readOnlyHint=True))
    @_errors_as_tool_errors
    async def list_sessions(
        ctx: Context,
        all_clients: Annotated[
            bool, Field(description="Admin clients only: every client's sessions, each with its owner.")
        ] = False,
    ) -> SessionList:
        """List your sessions, active and saved (hibernated: restored on their next use): ids, profile, times, last
        URL and cookie names/domains (never values)."""
        sessions = await _app(ctx).list_sessions(principal=who(), all_clients=all_clients)
        return SessionList.model_validate({"sessions": sessions})

    @server.tool(title="Close a session", annotations=ToolAnnotations(destructiveHint=True))
    @_errors_as_tool_errors
    async def close_session(
        ctx: Context,
        session_id: Annotated[str, Field(description="The session to close.")],
        owner: Annotated[
            str | None, Field(description="Admin clients only: the owner of another client's session.")
        ] = None,
    ) -> SessionClosed:
        """Close a session and its browser context (it waits for a call in progress on it to finish)."""
        closed = await _app(ctx).close_session(session_id, principal=who(), owner=owner)
        return SessionClosed.model_validate(closed)

    @server.tool(title="List profiles", annotations=ToolAnnotations(readOnlyHint=True))
    @_errors_as_tool_errors
    async def list_profiles(ctx: Context) -> ProfileList:
        """List the profiles usable with the profile argument: names and descriptions."""
        return ProfileList.model_validate({"profiles": _app(ctx).list_profiles()})

    for spec in app.tools.tools.values():
        server.add_tool(
            _plugin_tool(spec.fn, app, who), name=spec.name, description=spec.description,
            annotations=ToolAnnotations(readOnlyHint=spec.read_only),
        )
    strict_arguments(server)
    return server


def _plugin_tool(fn: Callable[..., Any], app: App, who: Callable[[], Principal]) -> Callable[..., Any]:
    """Wrap a plugin's tool: inject ``app`` and ``principal`` (the caller) if it asks for them, and report
    its errors like ours."""
    try:  # resolve string annotations (``from __future__ import annotations``) in the plugin's module
        signature = inspect.signature(fn, eval_str=True)
    except Exception:
        signature = inspect.signature(fn)
    wants_app = "app" in signature.parameters
    wants_principal = "principal" in signature.parameters

    @functools.wraps(fn)
    async def call(**kwargs: Any) -> Any:
        if wants_app:
            kwargs["app"] = app
        if wants_principal:
            kwargs["principal"] = who()
        result = fn(**kwargs)
        result = await result if inspect.isawaitable(result) else result
        return scrub_secrets(result) if isinstance(result, str | dict | list) else result

    # Always: with ``__wrapped__`` gone, MCP would otherwise see ``call(**kwargs)`` and not the tool's arguments.
    call.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p for p in signature.parameters.values() if p.name not in ("app", "principal")]
    )
    call.__annotations__ = {k: v for k, v in fn.__annotations__.items() if k not in ("app", "principal")}
    del call.__wrapped__  # MCP must see the signature above, not the plugin's
    return _errors_as_tool_errors(call)
