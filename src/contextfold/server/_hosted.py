"""Hosted tools in a Responses request: the tool types the server runs itself (OpenAI's "built-in tools").

    tools = await hosted_tools(state, tenant, body.tools)     # checked: every mistake is a 400 naming the field
    TurnSetup(..., hosted=tools.tools)                        # offered to the model, run by the runtime
    data["tools"] = [*function_tool_dicts, *tools.shown]      # echoed on the response as the client sent them

One table, `BUILDERS`, maps each hosted type to what builds its tools, so adding one (a `web_search` with a
search provider) touches this file only:
- `file_search`: searches the tenant's vector stores (`vector_store_ids`, `max_num_results`, `filters`,
  `ranking_options`) and shows as a `file_search_call` item;
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

from .._errors import InvalidRequestError
from ..events import ToolCall, ToolResult
from ..runtime._file_search import FILE_SEARCH, file_search_tool, parse_output, search_options
from ..runtime._tools import Tool

if TYPE_CHECKING:  # the items and stream modules import this one, and the state imports them
    from ._state import ServerState

RESULTS_INCLUDE = "file_search_call.results"
_WEB_SEARCH = ("web_search", "web_search_preview", "web_search_2025_08_26", "web_search_preview_2025_03_11")


@dataclass(slots=True)
class Hosted:
    tools: list[Tool] = field(default_factory=list)
    shown: list[dict[str, Any]] = field(default_factory=list)
    """The tools as the response object echoes them."""


Builder = Callable[["ServerState", str, Mapping[str, Any], str], Awaitable[tuple[list[Tool], dict[str, Any]]]]


async def _file_search(
    state: ServerState, tenant: str, spec: Mapping[str, Any], param: str
) -> tuple[list[Tool], dict[str, Any]]:
    ids = spec.get("vector_store_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
        raise InvalidRequestError(
            "a file_search tool needs vector_store_ids: a non-empty list of vector store ids",
            param=f"{param}.vector_store_ids",
        )
    for vector_store_id in ids:  # another tenant's store is as missing as one never made: 404 before any turn
        await state.store.knowledge.vector_stores.get(vector_store_id, tenant=tenant)
    options = search_options(spec.get("max_num_results"), spec.get("filters"), spec.get("ranking_options"), param=param)
    shown = {
        "type": "file_search",
        "vector_store_ids": ids,
        "max_num_results": options.max_num_results,
        "filters": spec.get("filters"),
        "ranking_options": spec.get("ranking_options") or {"ranker": "auto", "score_threshold": 0.0},
    }
    return [file_search_tool(state.store.knowledge, tenant, ids, options)], shown


async def _no_web_search(
    state: ServerState, tenant: str, spec: Mapping[str, Any], param: str
) -> tuple[list[Tool], dict[str, Any]]:
    raise InvalidRequestError(
        f"tool type {spec.get('type')!r} is not available: no web search provider is configured on this server; "
        "use file_search over your own files, or a function tool that searches the web",
        param=f"{param}.type",
    )


BUILDERS: dict[str, Builder] = {FILE_SEARCH: _file_search, **dict.fromkeys(_WEB_SEARCH, _no_web_search)}
HOSTED_TYPES = frozenset(BUILDERS)
HOSTED_NAMES = frozenset({FILE_SEARCH})
"""The tool names of hosted calls in the log, each shown as its own item type rather than a function call."""


async def hosted_tools(state: ServerState, tenant: str, tools: Sequence[Mapping[str, Any]] | None) -> Hosted:
    out = Hosted()
    for n, spec in enumerate(tools or ()):
        builder = BUILDERS.get(str(spec.get("type")))
        if builder is None:
            continue
        made, shown = await builder(state, tenant, spec, f"tools[{n}]")
        if {t.name for t in made} & {t.name for t in out.tools}:
            raise InvalidRequestError(f"send one {spec.get('type')} tool per request", param=f"tools[{n}]")
        out.tools += made
        out.shown.append(shown)
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
