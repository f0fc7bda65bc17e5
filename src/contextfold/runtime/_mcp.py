"""Remote MCP tools through the official `mcp` SDK (the `mcp` extra): list a server's tools, call them.

    server = McpServer("docs", "https://mcp.example.com/mcp", headers={"authorization": "Bearer …"})
    listing = await list_tools(server)                    # McpListingError when the server cannot be listed
    tools = mcp_tools(server, listing)                     # Tools the runtime runs itself (server-side)
    agent = Agent(model, store=store, tools=tools)         # a library agent with the server's tools

Transports: streamable HTTP, and SSE for a URL whose path ends in `/sse` (or `transport="sse"`). Each call opens
its own session, so nothing is held between turns. A call never raises: a timeout, a refused connection, a
protocol error or the tool's own error becomes an error result the model reads. Headers carry credentials:
they are sent to the server and nowhere else (not in a result, an error, a log line or the tool's repr).

A tool is offered to the model as `mcp__<server_label>__<tool>`, so calls in the log say which server they went
to (`split_name`), and two servers may have tools of the same name.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .._errors import InvalidRequestError
from ..events import ToolSpec
from ..models import ToolCallRequest
from ._events import ToolOutcome
from ._tools import Tool

PREFIX = "mcp__"
_SEPARATOR = "__"
_LABEL = re.compile(r"[A-Za-z0-9-]+(?:_[A-Za-z0-9-]+)*")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
MAX_OUTPUT = 100_000
"""Characters of a tool's result kept (the rest is cut, with a note saying so)."""

Approval = Literal["always", "never"]


@dataclass(frozen=True, slots=True)
class McpServer:
    label: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # credentials: never shown
    transport: Literal["streamable_http", "sse"] | None = None
    """None: SSE when the URL's path ends in `/sse`, else streamable HTTP."""
    allowed_tools: frozenset[str] | None = None
    """Only these tools (None: all the server lists)."""
    require_approval: Approval = "never"
    approval_overrides: Mapping[str, Approval] = field(default_factory=dict)
    """Per tool name, what `require_approval` is for it."""
    timeout: float = 30.0
    """Seconds for one listing or one call, connection included."""

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or len(self.label) > 32 or not _LABEL.fullmatch(self.label):
            raise InvalidRequestError(
                f"server_label {self.label!r} must be 1 to 32 letters, digits, '-' or single '_'",
                param="server_label",
            )
        if not isinstance(self.url, str) or not self.url.startswith(("http://", "https://")):
            raise InvalidRequestError("server_url must be an http:// or https:// URL", param="server_url")

    def needs_approval(self, tool: str) -> bool:
        return self.approval_overrides.get(tool, self.require_approval) == "always"

    @property
    def uses_sse(self) -> bool:
        if self.transport is not None:
            return self.transport == "sse"
        return self.url.split("?", 1)[0].rstrip("/").endswith("/sse")


@dataclass(frozen=True, slots=True)
class McpTool:
    name: str
    description: str | None
    input_schema: dict[str, Any]
    annotations: dict[str, Any] | None = None


class McpListingError(Exception):
    """The server could not be listed; the message says why (never with the request's headers)."""


def exposed_name(label: str, tool: str) -> str:
    return f"{PREFIX}{label}{_SEPARATOR}{_UNSAFE.sub('_', tool)}"[:64]


def split_name(name: str) -> tuple[str, str] | None:
    """(server label, tool name) of an exposed MCP tool name, or None for any other tool."""
    if not name.startswith(PREFIX):
        return None
    label, sep, tool = name[len(PREFIX) :].partition(_SEPARATOR)
    return (label, tool) if sep and label and tool else None


async def list_tools(server: McpServer) -> list[McpTool]:
    """The server's tools (only the allowed ones), or `McpListingError`."""

    async def listing(client: Any) -> list[McpTool]:
        found: list[McpTool] = []
        cursor: str | None = None
        for _ in range(100):  # pages; a server that pages forever is cut off
            page = await client.list_tools(cursor=cursor)
            for tool in page.tools:
                annotations = tool.annotations.model_dump(exclude_none=True) if tool.annotations else None
                found.append(McpTool(tool.name, tool.description, dict(tool.input_schema or {}), annotations))
            cursor = page.next_cursor
            if not cursor:
                break
        allowed = server.allowed_tools
        return [t for t in found if allowed is None or t.name in allowed]

    try:
        found: list[McpTool] = await _session(server, listing)
    except TimeoutError:
        raise McpListingError(
            f"listing the tools of MCP server {server.label!r} timed out after {server.timeout:g}s"
        ) from None
    except Exception as exc:  # refused, unreachable, not an MCP server, a protocol error
        raise McpListingError(f"cannot list the tools of MCP server {server.label!r}: {_reason(exc)}") from None
    return found


async def call_tool(server: McpServer, tool: str, arguments: Mapping[str, Any]) -> tuple[str, bool]:
    """The tool's text result and whether it is an error. Never raises (but for cancellation)."""

    async def calling(client: Any) -> tuple[str, bool]:
        result = await client.call_tool(tool, dict(arguments))
        parts = [_content_text(part) for part in result.content or []]
        if not parts and result.structured_content is not None:
            parts = [json.dumps(result.structured_content, ensure_ascii=False)]
        return "\n".join(parts), bool(result.is_error)

    try:
        text, is_error = await _session(server, calling)
    except TimeoutError:
        return f"MCP server {server.label!r}: {tool} timed out after {server.timeout:g}s", True
    except Exception as exc:
        return f"MCP server {server.label!r}: calling {tool} failed: {_reason(exc)}", True
    if len(text) > MAX_OUTPUT:
        text = text[:MAX_OUTPUT] + f"\n[cut: {len(text) - MAX_OUTPUT} more characters]"
    return text, is_error


async def _session(server: McpServer, use: Callable[[Any], Awaitable[Any]]) -> Any:
    try:
        import httpx2
        from mcp import Client
        from mcp.client.sse import sse_client
        from mcp.client.streamable_http import streamable_http_client
    except ImportError:  # pragma: no cover - the extra is part of the dev install
        raise McpListingError("MCP tools need the mcp extra: pip install 'contextfold[mcp]'") from None

    async def run() -> Any:
        headers = dict(server.headers)
        if server.uses_sse:
            transport: Any = sse_client(server.url, headers=headers, timeout=server.timeout)
            async with Client(transport, mode="legacy") as client:
                return await use(client)
        async with httpx2.AsyncClient(headers=headers, timeout=server.timeout) as http:
            transport = streamable_http_client(server.url, http_client=http)
            async with Client(transport, mode="legacy") as client:
                return await use(client)

    return await asyncio.wait_for(run(), server.timeout)


def _content_text(part: Any) -> str:
    text = getattr(part, "text", None)
    if isinstance(text, str):
        return text
    kind = getattr(part, "type", "content")
    return f"[{kind} content]"


def _reason(exc: BaseException) -> str:
    """The innermost cause in one line: task groups wrap the transport's error in exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def remote_of(tool: Tool) -> tuple[McpServer, str] | None:
    """The server and the remote name behind a tool made by `mcp_tools` (None: not an MCP tool)."""
    return (tool.server, tool.remote_name) if isinstance(tool, _McpTool) else None


class _McpTool(Tool):
    """One remote tool: its schema as the server gave it, its arguments passed through as JSON."""

    def __init__(self, server: McpServer, tool: McpTool) -> None:
        self.fn = self._call
        self.name = exposed_name(server.label, tool.name)
        self.description = tool.description or f"{tool.name} on MCP server {server.label}"
        self.timeout = server.timeout
        self.server_side = True
        self.tool_type = "mcp"
        self.parameters = tool.input_schema or {"type": "object", "properties": {}}
        self.server = server
        self.remote_name = tool.name

    @property
    def spec(self) -> ToolSpec:
        return ToolSpec(name=self.name, description=self.description, parameters=self.parameters)

    async def _call(self, **arguments: Any) -> str:  # pragma: no cover - run() is the entry point
        text, _ = await call_tool(self.server, self.remote_name, arguments)
        return text

    async def run(self, call: ToolCallRequest, *, time_limit: float) -> ToolOutcome:
        try:
            arguments = json.loads(call.arguments or "{}")
        except ValueError as exc:
            return ToolOutcome(call.call_id, self.name, f"the arguments are not valid JSON: {exc}", is_error=True)
        if not isinstance(arguments, dict):
            return ToolOutcome(call.call_id, self.name, "the arguments must be a JSON object", is_error=True)
        text, is_error = await call_tool(self.server, self.remote_name, arguments)
        return ToolOutcome(call.call_id, self.name, text, is_error=is_error)


def mcp_tools(server: McpServer, listing: Sequence[McpTool]) -> list[Tool]:
    """The listed tools as tools the runtime runs itself."""
    return [_McpTool(server, tool) for tool in listing]
