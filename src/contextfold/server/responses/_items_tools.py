"""Tool items given back as input: function calls and outputs, and the items of the tools the server runs.

What each means, so that it renders to the model as the log's own record of that tool would:
- `function_call` -> `ToolCall`; `function_call_output` -> `ToolResult` (a list of text parts is joined with
  newlines; the Responses wire has no error flag, so `is_error` is false);
- `mcp_call` -> a `ToolCall` and its `ToolResult` (the output, or the error with `is_error`). The built-in server
  (`server_label` contextfold) keeps the tool's own name (recall, expand); any other server's tool is named as the
  server offers it to the model, `mcp__<server_label>__<tool>`;
- `file_search_call` -> the `file_search` call (its queries as the arguments) and its result: the results, when
  the item has them, as the tool's JSON output; without them, a result that says they were not included (nothing
  is made up); a failed search is an error result;
- `mcp_approval_request` -> the MCP call it asks about, still waiting: its answer is an `mcp_approval_response`;
- `mcp_approval_response` -> an `ApprovalInput`: a Responses request runs (or declines) the call it names, a
  conversation records a refusal as the call's result;
- `mcp_list_tools` -> nothing: a listing is what the server offered, not something the model said or read.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..._errors import InvalidRequestError
from ...events import ToolCall, ToolResult
from ...runtime import FILE_SEARCH
from ...runtime import mcp_exposed_name as exposed_name
from ..edge._items_fields import (
    _TEXT_PARTS,
    Item,
    _kind,
    _list,
    _object,
    optional_string_at,
    shown,
    string_at,
    wrong,
)

BUILTIN_SERVER_LABEL = "contextfold"
"""The `server_label` of the `mcp_call` items that stand for our built-in tools (recall, expand)."""
RESULT_FIELDS = ("file_id", "filename", "score", "text", "attributes")
"""A file_search result's fields, in the order the tool writes them (`runtime._file_search.result_of`)."""


@dataclass(frozen=True, slots=True)
class ApprovalInput:
    """An `mcp_approval_response`: the client's answer to the `mcp_approval_request` named by `request_id`."""

    request_id: str
    approve: bool
    reason: str | None
    path: str
    """Where it was in the request, for errors about it."""


RunItem = Callable[[Item, str, str], tuple[ToolCall, ToolResult | None]]
"""A parser of an item that is a call of the model (and maybe its result): (item, path, batch id)."""


def function_call(item: Item, path: str, batch: str) -> ToolCall:
    return ToolCall(
        call_id=string_at(item, "call_id", path, non_empty=True),
        name=string_at(item, "name", path, non_empty=True),
        arguments=string_at(item, "arguments", path),
        batch_id=batch,
    )


def function_call_output(item: Item, path: str) -> ToolResult:
    call_id = string_at(item, "call_id", path, non_empty=True)
    output = item.get("output")
    where = f"{path}.output"
    if isinstance(output, str):
        return ToolResult(call_id=call_id, output=output)
    if not isinstance(output, list):
        raise wrong(where, "a string or an array of input_text parts", output)
    texts: list[str] = []
    for index, raw in enumerate(output):
        part_path = f"{where}[{index}]"
        part = _object(raw, part_path)
        kind = part.get("type")
        if kind not in _TEXT_PARTS:
            raise InvalidRequestError(
                f"{part_path}.type is {shown(kind)}; tool outputs may only hold text (input_text parts)",
                f"{part_path}.type",
            )
        texts.append(string_at(part, "text", part_path))
    return ToolResult(call_id=call_id, output="\n".join(texts))


def _mcp_tool_call(item: Item, path: str, batch: str) -> ToolCall:
    """The call an `mcp_call` or `mcp_approval_request` stands for, named as the model was offered the tool."""
    label = string_at(item, "server_label", path, non_empty=True)
    name = string_at(item, "name", path, non_empty=True)
    return ToolCall(
        call_id=string_at(item, "id", path, non_empty=True),
        name=name if label == BUILTIN_SERVER_LABEL else exposed_name(label, name),
        arguments=string_at(item, "arguments", path),
        batch_id=batch,
    )


def mcp_call(item: Item, path: str, batch: str) -> tuple[ToolCall, ToolResult | None]:
    call = _mcp_tool_call(item, path, batch)
    output = optional_string_at(item, "output", path)
    error = item.get("error")
    if error is None and item.get("status") != "failed":
        if output is None:
            raise InvalidRequestError(
                f"{path}.output is missing and so is its error; only completed mcp_call items can be given back "
                "(an unfinished call has no result to give the model)",
                f"{path}.output",
            )
        return call, ToolResult(call_id=call.call_id, output=output)
    text = output if output is not None else _error_text(error, f"{path}.error")
    return call, ToolResult(call_id=call.call_id, output=text, is_error=True)


def _error_text(error: object, path: str) -> str:
    """The readable text of an MCP call error (protocol and HTTP errors carry a message, execution errors content);
    a failed call with no error says only that."""
    if error is None:
        return "the tool call failed"
    found = _object(error, path)
    message = found.get("message")
    if isinstance(message, str):
        return message
    content = found.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        if texts:
            return "\n".join(texts)
    if content is not None:
        return json.dumps(content, default=str)
    return "the tool call failed"


def file_search_call(item: Item, path: str, batch: str) -> tuple[ToolCall, ToolResult | None]:
    call_id = string_at(item, "id", path, non_empty=True)
    queries: list[str] = []
    for index, raw in enumerate(_list(item, "queries", path)):
        if not isinstance(raw, str):
            raise wrong(f"{path}.queries[{index}]", "a string", raw)
        queries.append(raw)
    call = ToolCall(
        call_id=call_id,
        name=FILE_SEARCH,
        arguments=json.dumps({"queries": queries}, ensure_ascii=False),
        batch_id=batch,
    )
    if item.get("status") in ("failed", "incomplete"):
        return call, ToolResult(
            call_id=call_id, output=f"the file search did not complete ({item['status']})", is_error=True
        )
    if item.get("results") is None:
        text = (
            f"file_search ran for {json.dumps(queries, ensure_ascii=False)}, but its results were not included "
            "when this conversation was given back, so they are not known here"
        )
        return call, ToolResult(call_id=call_id, output=text)
    results: list[dict[str, Any]] = []
    for index, raw in enumerate(_list(item, "results", path)):
        result = _object(raw, f"{path}.results[{index}]")
        results.append({key: result.get(key) for key in RESULT_FIELDS})
    output = json.dumps({"queries": queries, "results": results}, ensure_ascii=False)
    return call, ToolResult(call_id=call_id, output=output)


def approval_request(item: Item, path: str, batch: str) -> tuple[ToolCall, ToolResult | None]:
    return _mcp_tool_call(item, path, batch), None


def approval_response(item: Item, path: str) -> ApprovalInput:
    approve = item.get("approve")
    if not isinstance(approve, bool):
        raise InvalidRequestError(
            f"{path}.approve must be a boolean (true runs the call, false declines it), not {_kind(approve)}",
            f"{path}.approve",
        )
    return ApprovalInput(
        request_id=string_at(item, "approval_request_id", path, non_empty=True),
        approve=approve,
        reason=optional_string_at(item, "reason", path),
        path=path,
    )


def check_listing(item: Item, path: str) -> None:
    """An `mcp_list_tools` item is accepted when well formed; it adds nothing to the log (see the module doc)."""
    string_at(item, "server_label", path)
    for index, raw in enumerate(_list(item, "tools", path)):
        _object(raw, f"{path}.tools[{index}]")


RUN_ITEMS: dict[str, RunItem] = {
    "mcp_call": mcp_call,
    "file_search_call": file_search_call,
    "mcp_approval_request": approval_request,
}
"""Items that are calls of the model, batched with the function calls around them (the model's parallel calls)."""
