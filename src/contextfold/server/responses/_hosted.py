"""Hosted tools in a Responses request: the tool types the server runs itself (OpenAI's "built-in tools").

    tools = await hosted_tools(state, tenant, body.tools)     # checked: every mistake is a 400 naming the field
    TurnSetup(..., hosted=tools.tools)                        # offered to the model, run by the runtime
    data["tools"] = [*function_tool_dicts, *tools.shown]      # echoed on the response as the client sent them

One table, `BUILDERS`, maps each hosted type to what builds its tools, so adding one (a `web_search` with a
search provider) touches this file only:
- `file_search`: searches the tenant's vector stores (`vector_store_ids`, `max_num_results`, `filters`,
  `ranking_options`) and shows as a `file_search_call` item;
- `mcp`: a remote MCP server's tools (`server_label`, `server_url`, `headers`, `allowed_tools`,
  `require_approval`), listed once per conversation (see `_mcp_hosted`);
- `web_search` (and its preview names): refused with a 400 that says why: no search provider is configured.

The items and stream events of a `file_search` call are built here too (`file_search_item`, `FileSearchEvents`),
so the item and stream modules only ask.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, get_args

from openai.types.responses import ResponseIncludable

from ..._errors import InvalidRequestError
from ...events import ToolCall, ToolResult
from ...runtime import FILE_SEARCH, Tool, file_search_tool, search_options
from ...runtime import mcp_split_name as split_name
from ...runtime import parse_file_search_output as parse_output
from ._mcp_hosted import add_mcp_server, mcp_item, prior_listings

if TYPE_CHECKING:  # the items and stream modules import this one, and the state imports them
    from .._state import ServerState

RESULTS_INCLUDE = "file_search_call.results"
_WEB_SEARCH = ("web_search", "web_search_preview", "web_search_2025_08_26", "web_search_preview_2025_03_11")


@dataclass(slots=True)
class Hosted:
    """What a request's hosted tools add to its turn and its response; each builder adds its part."""

    tools: list[Tool] = field(default_factory=list)
    shown: list[dict[str, Any]] = field(default_factory=list)
    """The tools as the response object echoes them (without credentials)."""
    listed: list[dict[str, Any]] = field(default_factory=list)
    """`mcp_list_tools` items this response lists first (a listing not yet in the conversation)."""
    listings: dict[str, Any] = field(default_factory=dict)
    """The MCP listings in force after this response, by server label (kept on the response record)."""
    approvals: set[str] = field(default_factory=set)
    """Tool names whose calls wait for the client's approval: a call to one ends the response."""


@dataclass(frozen=True, slots=True)
class Context:
    state: ServerState
    tenant: str
    conversation_id: str
    prior: Mapping[str, Any]
    """The conversation's MCP listings so far, by server label."""


Builder = Callable[[Context, Mapping[str, Any], str, Hosted], Awaitable[None]]


async def _file_search(ctx: Context, spec: Mapping[str, Any], param: str, out: Hosted) -> None:
    ids = spec.get("vector_store_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
        raise InvalidRequestError(
            "a file_search tool needs vector_store_ids: a non-empty list of vector store ids",
            param=f"{param}.vector_store_ids",
        )
    knowledge = ctx.state.store.knowledge
    for vector_store_id in ids:  # another tenant's store is as missing as one never made: 404 before any turn
        await knowledge.vector_stores.get(vector_store_id, tenant=ctx.tenant)
    options = search_options(spec.get("max_num_results"), spec.get("filters"), spec.get("ranking_options"), param=param)
    if any(t.name == FILE_SEARCH for t in out.tools):
        raise InvalidRequestError("send one file_search tool per request (list all its stores in it)", param=param)
    out.tools.append(file_search_tool(knowledge, ctx.tenant, ids, options, ctx.state.embedder))
    out.shown.append(
        {
            "type": "file_search",
            "vector_store_ids": ids,
            "max_num_results": options.max_num_results,
            "filters": spec.get("filters"),
            "ranking_options": spec.get("ranking_options") or {"ranker": "auto", "score_threshold": 0.0},
        }
    )


async def _no_web_search(ctx: Context, spec: Mapping[str, Any], param: str, out: Hosted) -> None:
    raise InvalidRequestError(
        f"tool type {spec.get('type')!r} is not available: no web search provider is configured on this server; "
        "use file_search over your own files, or a function tool that searches the web",
        param=f"{param}.type",
    )


BUILDERS: dict[str, Builder] = {
    FILE_SEARCH: _file_search,
    "mcp": add_mcp_server,
    **dict.fromkeys(_WEB_SEARCH, _no_web_search),
}
HOSTED_TYPES = frozenset(BUILDERS)
HOSTED_NAMES = frozenset({FILE_SEARCH})
"""The tool names of hosted calls in the log, each shown as its own item type rather than a function call
(MCP tools too: their names start with `mcp__`)."""


def is_hosted(name: str) -> bool:
    return name in HOSTED_NAMES or split_name(name) is not None


async def hosted_tools(
    state: ServerState, tenant: str, tools: Sequence[Mapping[str, Any]] | None, conversation_id: str
) -> Hosted:
    out = Hosted()
    if not any(isinstance(spec, Mapping) and spec.get("type") in BUILDERS for spec in tools or ()):
        return out
    ctx = Context(state, tenant, conversation_id, await prior_listings(state, conversation_id))
    out.listings = dict(ctx.prior)  # listings of servers this request does not name stay for later ones
    for n, spec in enumerate(tools or ()):
        builder = BUILDERS.get(str(spec.get("type")))
        if builder is not None:
            await builder(ctx, spec, f"tools[{n}]", out)
    return out


def check_include(include: Sequence[str] | None) -> list[str]:
    known = set(get_args(ResponseIncludable))  # others than file_search_call.results change nothing here
    for n, value in enumerate(include or ()):
        if value not in known:
            raise InvalidRequestError(
                f"include value {value!r} is not supported; supported: {', '.join(sorted(known))}",
                param=f"include[{n}]",
            )
    return list(include or ())


# --- items and stream events ------------------------------------------------------------------------------------


def hosted_item(call: ToolCall, result: ToolResult | None) -> dict[str, Any]:
    """The item of a hosted call in the log and its result (None while it runs, or awaits approval)."""
    if split_name(call.name) is not None:
        return mcp_item(call, result)
    return file_search_item(call, result)


def file_search_item(call: ToolCall, result: ToolResult | None) -> dict[str, Any]:
    """The `file_search_call` item of a call in the log and its result (None while it runs)."""
    if result is None:
        return search_item(call.id, call.arguments, None)
    return search_item(call.id, call.arguments, result.output, is_error=result.is_error)


def search_item(
    item_id: str, arguments: str, output: str | None, *, is_error: bool = False, results: bool = True
) -> dict[str, Any]:
    """A `file_search_call` item: its queries, status and (when `results`) what it found."""
    queries, found = parse_output(output) if output is not None else ([], None)
    if not queries:
        queries = _queries(arguments)
    status = "in_progress" if output is None else "failed" if is_error or found is None else "completed"
    return {
        "type": "file_search_call",
        "id": item_id,
        "queries": queries,
        "status": status,
        "results": found if results and found is not None else None,
    }


def _queries(arguments: str) -> list[str]:
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError:
        return []
    queries = parsed.get("queries") if isinstance(parsed, dict) else None
    return [q for q in queries if isinstance(q, str)] if isinstance(queries, list) else []


def without_results(items: list[dict[str, Any]], include: Sequence[str] | None) -> list[dict[str, Any]]:
    """The items as a response shows them: a file_search_call's results only when the request included them."""
    if RESULTS_INCLUDE in (include or ()):
        return items
    return [{**i, "results": None} if i.get("type") == "file_search_call" else i for i in items]
