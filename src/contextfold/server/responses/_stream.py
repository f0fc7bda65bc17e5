"""Server-sent events as OpenAI sends them for a streamed response, mapped from the runtime's turn events.

    response.created, response.in_progress
    response.compaction.compacting               a compaction step starts
      response.output_item.added/done (compaction)
    response.output_item.added (message)        before any delta of that item
      response.content_part.added, response.output_text.delta ..., response.output_text.done,
      response.content_part.done, response.output_item.done
    response.output_item.added (function_call)
      response.function_call_arguments.delta ..., response.function_call_arguments.done, response.output_item.done
    response.output_item.added (mcp_call)       a built-in tool (recall, expand) the server runs itself
      response.mcp_call_arguments.delta/done, response.mcp_call.in_progress, response.mcp_call.completed|failed,
      response.output_item.done
    response.output_item.added (file_search_call)   a hosted file_search (see `_hosted`)
      response.file_search_call.in_progress, .searching, .completed, response.output_item.done
    response.output_item.added (mcp_list_tools)     first, for each MCP server listed (see `_mcp_hosted`)
      response.mcp_list_tools.in_progress, .completed|failed, response.output_item.done
    an MCP server's tool: as a built-in's mcp_call, under its own server_label; one that needs approval:
      response.output_item.added/done (mcp_approval_request), and the response ends
    response.completed | response.incomplete | response.failed   with the whole response, built from the log

Every event carries `sequence_number`, from 0; the item and content-part events also carry the `response_id` (not
in OpenAI's types, which ignore it; llama-stack-client's require it, and its agent mis-reads the stream without it).
Items keep their output index from the moment they are added; their
ids are the ids their events get in the log, announced by the runtime before the events exist.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ...runtime import (
    StepCompleted,
    StepProgress,
    StepStarted,
    TextDelta,
    ToolCallCompletedDelta,
    ToolCallDelta,
    ToolCallIssuedDelta,
    ToolCallStartedDelta,
    TurnEvent,
)
from ...runtime import mcp_split_name as split_name
from ._hosted import HOSTED_NAMES, RESULTS_INCLUDE, search_item
from ._items import BUILTIN_SERVER_LABEL

Event = dict[str, Any]
_WITH_RESPONSE_ID = frozenset(
    {
        "response.output_item.added",
        "response.output_item.done",
        "response.content_part.added",
        "response.content_part.done",
    }
)


@dataclass(slots=True)
class _Open:
    index: int
    item: dict[str, Any]
    text: list[str] = field(default_factory=list)
    final: str | None = None


class StreamMapper:
    """Turns runtime events into OpenAI stream events for one response. Not shared between responses."""

    def __init__(self, builtin_tools: frozenset[str] = frozenset({"recall", "expand"})) -> None:
        self.builtin_tools = builtin_tools
        self.sequence = 0
        self.next_index = 0
        self._open: dict[str, _Open] = {}  # item id -> open item
        self._calls: dict[str, str] = {}  # call id -> item id
        self.response_id = ""
        """Learnt from `start`, so that every caller (the live run, the rebuilt stream) stamps it alike."""
        self.include: frozenset[str] = frozenset()
        """The request's `include`: a file_search_call's results are streamed only when it names them."""
        self.approvals: frozenset[str] = frozenset()
        """MCP tools whose calls wait for approval: shown as `mcp_approval_request` items."""
        self.listing: list[dict[str, Any]] = []
        """The `mcp_list_tools` items this response lists, streamed right after it starts."""

    def event(self, kind: str, **fields: Any) -> Event:
        out = {"type": kind, "sequence_number": self.sequence, **fields}
        if kind in _WITH_RESPONSE_ID and self.response_id:
            out["response_id"] = self.response_id
        self.sequence += 1
        return out

    def start(self, response: dict[str, Any]) -> list[Event]:
        self.response_id = str(response.get("id") or "")
        out = [
            self.event("response.created", response=response),
            self.event("response.in_progress", response=response),
        ]
        for item in self.listing:
            index = self._take_index()
            common = {"item_id": item["id"], "output_index": index}
            done = "response.mcp_list_tools.failed" if item.get("error") else "response.mcp_list_tools.completed"
            out.append(self.event("response.output_item.added", output_index=index, item={**item, "tools": []}))
            out.append(self.event("response.mcp_list_tools.in_progress", **common))
            out.append(self.event(done, **common))
            out.append(self.event("response.output_item.done", output_index=index, item=item))
        return out

    def finish(self, response: dict[str, Any]) -> list[Event]:
        status = response["status"]
        kind = {"completed": "response.completed", "incomplete": "response.incomplete"}.get(status, "response.failed")
        return [self.event(kind, response=response)]

    def compaction_started(self, step: StepStarted) -> list[Event]:
        item_id = str(step.metadata.get("compaction_id", ""))
        return [self.event("response.compaction.compacting", item_id=item_id, output_index=self.next_index)]

    def compaction_item(self, item: dict[str, Any]) -> list[Event]:
        index = self._take_index()
        return [
            self.event("response.output_item.added", output_index=index, item=item),
            self.event("response.output_item.done", output_index=index, item=item),
        ]

    def map(self, event: TurnEvent) -> list[Event]:
        if isinstance(event, StepProgress):
            delta = event.delta
            if isinstance(delta, TextDelta):
                return self._text(delta)
            if isinstance(delta, ToolCallStartedDelta):
                return self._call_started(delta)
            if isinstance(delta, ToolCallDelta):
                return self._arguments(delta)
            if isinstance(delta, ToolCallCompletedDelta):
                return self._call_completed(delta)
            if isinstance(delta, ToolCallIssuedDelta):
                self._issued(delta)
            return []
        if isinstance(event, StepCompleted) and event.step_type == "inference":
            return self._close_inference()
        return []

    # --- messages -------------------------------------------------------------------------------------------------

    def _take_index(self) -> int:
        index = self.next_index
        self.next_index += 1
        return index

    def _text(self, delta: TextDelta) -> list[Event]:
        out: list[Event] = []
        opened = self._open.get(delta.item_id)
        if opened is None:
            item = {"type": "message", "id": delta.item_id, "role": "assistant", "status": "in_progress", "content": []}
            opened = self._open[delta.item_id] = _Open(self._take_index(), item)
            out.append(self.event("response.output_item.added", output_index=opened.index, item=item))
            out.append(
                self.event(
                    "response.content_part.added",
                    item_id=delta.item_id,
                    output_index=opened.index,
                    content_index=0,
                    part=_text_part(""),
                )
            )
        opened.text.append(delta.text)
        out.append(
            self.event(
                "response.output_text.delta",
                item_id=delta.item_id,
                output_index=opened.index,
                content_index=0,
                delta=delta.text,
                logprobs=[],
            )
        )
        return out

    # --- tool calls -----------------------------------------------------------------------------------------------

    def _call_started(self, delta: ToolCallStartedDelta) -> list[Event]:
        builtin = delta.tool_name in self.builtin_tools
        item: dict[str, Any]
        if delta.tool_name in HOSTED_NAMES:
            item = {"type": "file_search_call", "id": delta.item_id, "queries": [], "status": "in_progress"}
            opened = self._open[delta.item_id] = _Open(self._take_index(), item)
            self._calls[delta.call_id] = delta.item_id
            return [
                self.event("response.output_item.added", output_index=opened.index, item={**item, "results": None}),
                self.event("response.file_search_call.in_progress", item_id=delta.item_id, output_index=opened.index),
            ]
        remote = split_name(delta.tool_name)
        if remote is not None and delta.tool_name in self.approvals:
            label, name = remote
            item = {"type": "mcp_approval_request", "id": delta.item_id, "server_label": label, "name": name}
            opened = self._open[delta.item_id] = _Open(self._take_index(), {**item, "arguments": ""})
            self._calls[delta.call_id] = delta.item_id
            return [self.event("response.output_item.added", output_index=opened.index, item=opened.item)]
        if builtin or remote is not None:
            label, name = remote or (BUILTIN_SERVER_LABEL, delta.tool_name)
            item = {
                "type": "mcp_call",
                "id": delta.item_id,
                "server_label": label,
                "name": name,
                "arguments": "",
                "status": "in_progress",
            }
        else:
            item = {
                "type": "function_call",
                "id": delta.item_id,
                "call_id": delta.call_id,
                "name": delta.tool_name,
                "arguments": "",
                "status": "in_progress",
            }
        opened = self._open[delta.item_id] = _Open(self._take_index(), item)
        self._calls[delta.call_id] = delta.item_id
        return [self.event("response.output_item.added", output_index=opened.index, item=item)]

    def _arguments(self, delta: ToolCallDelta) -> list[Event]:
        item_id = self._calls.get(delta.call_id)
        opened = self._open.get(item_id or "")
        if opened is None or item_id is None:
            return []
        opened.text.append(delta.arguments_delta)
        if opened.item["type"] in ("file_search_call", "mcp_approval_request"):
            return []  # OpenAI streams no arguments for these: they come with the item
        kind = "response.mcp_call_arguments.delta" if opened.item["type"] == "mcp_call" else None
        return [
            self.event(
                kind or "response.function_call_arguments.delta",
                item_id=item_id,
                output_index=opened.index,
                delta=delta.arguments_delta,
            )
        ]

    def _issued(self, delta: ToolCallIssuedDelta) -> None:
        """The complete call: its arguments as the log holds them (what was streamed may have been repaired)."""
        opened = self._open.get(self._calls.get(delta.call_id, ""))
        if opened is not None:
            opened.final = delta.arguments

    def _call_completed(self, delta: ToolCallCompletedDelta) -> list[Event]:
        item_id = self._calls.get(delta.call_id)
        opened = self._open.pop(item_id or "", None)
        if opened is not None and item_id is not None and opened.item["type"] == "file_search_call":
            return self._file_search_completed(delta, item_id, opened)
        if opened is None or item_id is None or opened.item["type"] != "mcp_call":
            return []
        item = {**opened.item, "status": "completed", "output": delta.result}
        if delta.is_error:
            # The item as the log shows it afterwards (`_items`): the tool ran and reported a failure, an MCP
            # execution error (the SDK's `McpToolCallError`, not a bare string).
            item["error"] = {"type": "mcp_tool_execution_error", "content": [{"type": "text", "text": delta.result}]}
        kind = "response.mcp_call.failed" if delta.is_error else "response.mcp_call.completed"
        return [
            self.event(kind, item_id=item_id, output_index=opened.index),
            self.event("response.output_item.done", output_index=opened.index, item=item),
        ]

    def _file_search_completed(self, delta: ToolCallCompletedDelta, item_id: str, opened: _Open) -> list[Event]:
        results = RESULTS_INCLUDE in self.include
        item = search_item(item_id, opened.final or "{}", delta.result, is_error=delta.is_error, results=results)
        common = {"item_id": item_id, "output_index": opened.index}
        return [
            self.event("response.file_search_call.completed", **common),
            self.event("response.output_item.done", output_index=opened.index, item=item),
        ]

    def _close_inference(self) -> list[Event]:
        """The model's answer is complete: close its message and its calls (built-in calls close with results)."""
        out: list[Event] = []
        for item_id, opened in sorted(self._open.items(), key=lambda kv: kv[1].index):
            kind = opened.item["type"]
            text = "".join(opened.text)
            if kind == "message":
                part = _text_part(text)
                item = {**opened.item, "status": "completed", "content": [part]}
                common = {"item_id": item_id, "output_index": opened.index, "content_index": 0}
                out.append(self.event("response.output_text.done", **common, text=text, logprobs=[]))
                out.append(self.event("response.content_part.done", **common, part=part))
                out.append(self.event("response.output_item.done", output_index=opened.index, item=item))
                del self._open[item_id]
            elif kind == "function_call":
                arguments = opened.final or _arguments(text)
                item = {**opened.item, "status": "completed", "arguments": arguments}
                out.append(
                    self.event(
                        "response.function_call_arguments.done",
                        item_id=item_id,
                        output_index=opened.index,
                        name=opened.item["name"],
                        arguments=arguments,
                    )
                )
                out.append(self.event("response.output_item.done", output_index=opened.index, item=item))
                del self._open[item_id]
            elif kind == "mcp_approval_request":  # complete: the response ends, waiting for the approval
                item = {**opened.item, "arguments": opened.final or _arguments(text)}
                out.append(self.event("response.output_item.done", output_index=opened.index, item=item))
                del self._open[item_id]
            elif kind == "file_search_call":  # complete: it searches next
                arguments = opened.final or _arguments(text)
                opened.final = arguments
                common = {"item_id": item_id, "output_index": opened.index}
                out.append(self.event("response.file_search_call.searching", **common))
            else:  # a built-in call: its arguments are complete; it runs next
                arguments = opened.final or _arguments(text)
                opened.item = {**opened.item, "arguments": arguments}
                common = {"item_id": item_id, "output_index": opened.index}
                out.append(self.event("response.mcp_call_arguments.done", **common, arguments=arguments))
                out.append(self.event("response.mcp_call.in_progress", **common))
        return out


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _arguments(text: str) -> str:
    return text or "{}"


def encode(event: Event) -> bytes:
    """One SSE frame, as OpenAI writes it: an `event:` line naming the type, then the JSON `data:` line."""
    return f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode()
