"""The `mcp` tool type in Responses: a remote MCP server's tools for one response, its items, its approvals.

    {"type": "mcp", "server_label": "docs", "server_url": "https://…/mcp", "headers": {...},
     "allowed_tools": [...] | {"tool_names": [...]}, "require_approval": "always" | "never" |
     {"always": {"tool_names": [...]}, "never": {"tool_names": [...]}}}

- Listing: the first response of a conversation that names a server lists its tools and shows an `mcp_list_tools`
  item; later responses reuse that listing (kept on the response records) until the tool's definition (label,
  URL, allowed tools) changes. A server that cannot be listed gives an `mcp_list_tools` item with its `error`, and
  no tools: the turn goes on without them.
- Calls: `mcp_call` items with `output`, or `error` for a failure (timeouts and refused connections included).
- Approvals: OpenAI's default is `always`. A call that needs one ends the response with an `mcp_approval_request`
  item (the call is in the log, unanswered); the client continues with an `mcp_approval_response` input item
  (`approval_request_id`, `approve`), and the server runs the call (or records the refusal) before the turn.
- Headers are used for the connection only: the echoed tool, the log, the listing and the inspector never hold
  them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..._errors import InvalidRequestError, NotFoundError
from ...events import Event, ToolCall, ToolResult, new_id
from ...runtime import McpListingError, McpServer, McpTool, mcp_tools
from ...runtime import call_mcp_tool as call_tool
from ...runtime import list_mcp_tools as list_tools
from ...runtime import mcp_remote_of as remote_of
from ...runtime import mcp_split_name as split_name
from ._items_input import CompactionInput, ItemReference
from ._items_tools import ApprovalInput

if TYPE_CHECKING:
    from ..._conversation import Conversation
    from ...runtime import Tool
    from ...store import Store
    from .._state import ServerState
    from ._hosted import Context, Hosted
    from ._items_input import InputEntry

APPROVAL_RESPONSE = "mcp_approval_response"
LISTING_TIMEOUT = 10.0
_PRIOR_RESPONSES = 50


def server_of(spec: Mapping[str, Any], param: str, *, timeout: float = 30.0) -> McpServer:
    """A request's mcp tool as a server to connect to; every mistake a 400 naming the field."""
    if spec.get("connector_id"):
        raise InvalidRequestError(
            "connectors are not available here; give the MCP server's server_url", param=f"{param}.connector_id"
        )
    url = spec.get("server_url")
    if not isinstance(url, str) or not url:
        raise InvalidRequestError("an mcp tool needs a server_url", param=f"{param}.server_url")
    headers = spec.get("headers") or {}
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise InvalidRequestError("headers must be an object of strings", param=f"{param}.headers")
    allowed = spec.get("allowed_tools")
    if isinstance(allowed, Mapping):
        allowed = allowed.get("tool_names")
    if allowed is not None and (not isinstance(allowed, list) or not all(isinstance(t, str) for t in allowed)):
        raise InvalidRequestError(
            "allowed_tools must be a list of tool names (or {'tool_names': [...]})", param=f"{param}.allowed_tools"
        )
    default, overrides = _approvals(spec.get("require_approval", "always"), f"{param}.require_approval")
    try:
        return McpServer(
            label=str(spec.get("server_label") or ""),
            url=url,
            headers=dict(headers),
            allowed_tools=frozenset(allowed) if allowed is not None else None,
            require_approval=default,
            approval_overrides=overrides,
            timeout=timeout,
        )
    except InvalidRequestError as exc:
        raise InvalidRequestError(str(exc), param=f"{param}.{exc.param}") from None


def _approvals(value: Any, param: str) -> tuple[Any, dict[str, Any]]:
    if value in ("always", "never"):
        return value, {}
    if not isinstance(value, Mapping) or not set(value) <= {"always", "never"}:
        raise InvalidRequestError(
            "require_approval must be 'always', 'never' or {'always': {'tool_names': [...]}, 'never': {...}}",
            param=param,
        )
    overrides: dict[str, Any] = {}
    for kind in ("always", "never"):
        names = (value.get(kind) or {}).get("tool_names") or []
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InvalidRequestError(f"require_approval.{kind}.tool_names must be a list of names", param=param)
        overrides.update(dict.fromkeys(names, kind))
    # Tools named in neither list need approval, as OpenAI's default does.
    return "always", overrides


def _key(server: McpServer) -> str:
    """What the listing depends on: the definition, bar the credentials."""
    allowed = sorted(server.allowed_tools) if server.allowed_tools is not None else None
    text = json.dumps([server.label, server.url, allowed])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


async def prior_listings(state: ServerState, conversation_id: str) -> dict[str, Any]:
    """The conversation's MCP listings in force, by server label: the newest response that kept them."""
    try:
        records = await state.store.responses.for_conversation(conversation_id, limit=_PRIOR_RESPONSES)
    except NotFoundError:
        return {}
    for record in records:  # newest first
        kept = record.data.get("mcp_listings")
        if isinstance(kept, dict) and kept:
            return kept
    return {}


async def add_mcp_server(ctx: Context, spec: Mapping[str, Any], param: str, out: Hosted) -> None:
    server = server_of(spec, param, timeout=ctx.state.config.mcp_timeout)
    if any(s.get("type") == "mcp" and s.get("server_label") == server.label for s in out.shown):
        raise InvalidRequestError(f"two mcp tools have server_label {server.label!r}; labels must differ", param)
    key = _key(server)
    prior = ctx.prior.get(server.label)
    if isinstance(prior, Mapping) and prior.get("key") == key:  # listed before in this conversation
        listing = [McpTool(**tool) for tool in prior.get("tools") or []]
    else:
        item: dict[str, Any] = {"type": "mcp_list_tools", "id": new_id("mcpl"), "server_label": server.label}
        try:
            # listed while the conversation is held, before its lease is renewed: well within the lease's time
            listing = await list_tools(dataclasses.replace(server, timeout=min(server.timeout, LISTING_TIMEOUT)))
            item["tools"] = [_tool_dict(t) for t in listing]
            out.listings[server.label] = {"key": key, "tools": [_tool_dict(t) for t in listing]}
        except McpListingError as exc:  # no tools from it this time; the next response tries again
            listing = []
            item.update(tools=[], error=str(exc))
            out.listings.pop(server.label, None)
        out.listed.append(item)
    tools = mcp_tools(server, listing)
    out.tools += tools
    out.approvals.update(t.name for t, m in zip(tools, listing, strict=True) if server.needs_approval(m.name))
    shown = {k: v for k, v in spec.items() if k != "headers"}  # credentials are never echoed or stored
    out.shown.append({**shown, "headers": None})


def _tool_dict(tool: McpTool) -> dict[str, Any]:
    return {
        "name": tool.name,
        "description": tool.description,
        "input_schema": tool.input_schema,
        "annotations": tool.annotations,
    }


def listing_items(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The `mcp_list_tools` items a response record lists before its output."""
    items = data.get("mcp_list_items")
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


# --- items ----------------------------------------------------------------------------------------------------


def mcp_item(call: ToolCall, result: ToolResult | None) -> dict[str, Any]:
    """An MCP call in the log: `mcp_call` once it has a result, else the `mcp_approval_request` it waits on."""
    label, name = split_name(call.name) or ("", call.name)
    if result is None:
        return {
            "type": "mcp_approval_request",
            "id": call.id,
            "server_label": label,
            "name": name,
            "arguments": call.arguments,
        }
    item: dict[str, Any] = {
        "type": "mcp_call",
        "id": call.id,
        "server_label": label,
        "name": name,
        "arguments": call.arguments,
        "output": result.output,
        "status": "failed" if result.is_error else "completed",
    }
    if result.is_error:
        item["error"] = {"type": "mcp_tool_execution_error", "content": [{"type": "text", "text": result.output}]}
    return item


# --- approvals ------------------------------------------------------------------------------------------------


def split_approvals(given: Any) -> tuple[Any, list[tuple[int, Mapping[str, Any]]]]:
    """The input without its `mcp_approval_response` items, and those items with their index."""
    if not isinstance(given, list):
        return given, []
    approvals = [(n, i) for n, i in enumerate(given) if isinstance(i, Mapping) and i.get("type") == APPROVAL_RESPONSE]
    if not approvals:
        return given, []
    taken = {n for n, _ in approvals}
    return [i for n, i in enumerate(given) if n not in taken], approvals


async def answer_approvals(
    conversation: Conversation, approvals: Sequence[tuple[int, Mapping[str, Any]]], tools: Sequence[Tool]
) -> list[ToolResult]:
    """Each approved call run now (with this request's tools), each refused one answered as refused."""
    results: list[ToolResult] = []
    if not approvals:  # every turn asks; most have none: nothing here may cost per item of the conversation
        return results
    by_name = {t.name: t for t in tools}
    for n, approval in approvals:
        param = f"input[{n}]"
        request_id = approval.get("approval_request_id")
        approve = approval.get("approve")
        if not isinstance(request_id, str) or not isinstance(approve, bool):
            raise InvalidRequestError(
                "an mcp_approval_response needs approval_request_id (a string) and approve (a boolean)", param=param
            )
        found = await conversation.store.read(conversation.id, ids=[request_id])
        call = found[0] if found else None
        if not isinstance(call, ToolCall) or split_name(call.name) is None or _answered(conversation, call):
            raise InvalidRequestError(
                f"{request_id!r} is not an mcp_approval_request of this conversation still waiting for an answer",
                param=f"{param}.approval_request_id",
            )
        tool = by_name.get(call.name)
        remote = remote_of(tool) if tool is not None else None
        if not approve:
            reason = approval.get("reason")
            results.append(declined(call.call_id, reason if isinstance(reason, str) else None))
            continue
        if remote is None:
            label = (split_name(call.name) or ("", ""))[0]
            raise InvalidRequestError(
                f"send the mcp tool of server {label!r} again with this request: the approved call runs on it",
                param="tools",
            )
        arguments = json.loads(call.arguments or "{}")
        output, is_error = await call_tool(*remote, arguments if isinstance(arguments, dict) else {})
        results.append(ToolResult(call_id=call.call_id, output=output, is_error=is_error))
    return results


def _answered(conversation: Conversation, call: ToolCall) -> bool:
    """Whether the view holds a result of `call`. A result follows its call, and the view's items are in log
    order (appended one by one; a compaction keeps them sorted), so only the items after the call are looked at,
    newest first: an approval answers the response just before it, so that is a handful, not the conversation."""
    for seq, item in reversed(conversation.view.items.items()):
        if seq <= call.seq:
            return False
        if isinstance(item, ToolResult) and item.call_id == call.call_id:
            return True
    return False


def declined(call_id: str, reason: str | None) -> ToolResult:
    """The result of a call the user declined to approve: an error the model reads."""
    text = "the user declined this call" + (f": {reason}" if reason else "")
    return ToolResult(call_id=call_id, output=text, is_error=True)


async def written_approvals(
    store: Store, conversation_id: str | None, entries: Sequence[InputEntry]
) -> list[Event | CompactionInput]:
    """Entries written to a log directly (a conversation's items, a compact's input), their approval responses
    answered: a refusal becomes the result of the call it names (in these entries, or stored), as a Responses
    request records it. An approval cannot be: its call runs on a response, with the mcp tool. Item references
    are left out (the callers refuse or skip them)."""
    asked = {e.call_id for e in entries if isinstance(e, ToolCall)}
    out: list[Event | CompactionInput] = []
    for entry in entries:
        if isinstance(entry, ItemReference):
            continue
        if not isinstance(entry, ApprovalInput):
            out.append(entry)
            continue
        if entry.approve:
            raise InvalidRequestError(
                "an approving mcp_approval_response cannot be written to a log directly: the call it approves runs "
                "on a response; send it as input of POST /v1/responses with the conversation and its mcp tool",
                param=entry.path,
            )
        call_id = entry.request_id if entry.request_id in asked else None
        if call_id is None and conversation_id is not None:
            found = await store.read(conversation_id, ids=[entry.request_id])
            if found and isinstance(found[0], ToolCall) and split_name(found[0].name) is not None:
                call_id = found[0].call_id
        if call_id is None:
            raise InvalidRequestError(
                f"{entry.request_id!r} is not an mcp_approval_request of this conversation or these items",
                param=f"{entry.path}.approval_request_id",
            )
        out.append(declined(call_id, entry.reason))
    return out
