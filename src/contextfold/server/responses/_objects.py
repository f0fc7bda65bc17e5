"""Response objects, built from a stored response record and the log events of its turn.

A stored response holds no copy of any item: its record says which range of its conversation's log is its input
and which its output (`first_seq`, `data.output_seq`, `last_seq`), and every read builds the object from those
events. The shapes are the OpenAI Responses API's; the tests validate them with the `openai` package's models.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...events import AnyEvent, ToolSpec, Usage
from ...store import ResponseRecord
from ._hosted import without_results
from ._items import output_items
from ._mcp_hosted import listing_items

TERMINAL = ("completed", "incomplete", "failed", "cancelled")


def tool_dicts(specs: Sequence[ToolSpec] | None) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "name": spec.name,
            "description": spec.description or None,
            "parameters": spec.parameters or {"type": "object", "properties": {}},
            "strict": False,
        }
        for spec in specs or ()
    ]


def usage_of(events: Sequence[AnyEvent]) -> dict[str, Any]:
    used = [e for e in events if isinstance(e, Usage)]
    inputs = sum(u.input_tokens for u in used)
    outputs = sum(u.output_tokens for u in used)
    return {
        "input_tokens": inputs,
        "input_tokens_details": {"cached_tokens": sum(u.cached_input_tokens for u in used), "cache_write_tokens": 0},
        "output_tokens": outputs,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": inputs + outputs,
    }


def response_object(record: ResponseRecord, events: Sequence[AnyEvent]) -> dict[str, Any]:
    """The response as the API returns it. `events` are the log events from `record.first_seq` on."""
    data = record.data
    output_seq = int(data.get("output_seq") or 0)  # 0: the turn's input is not stored yet, so no output either
    last = record.last_seq or (events[-1].seq if events else 0)
    turn = [e for e in events if record.first_seq <= e.seq <= last]
    # a cancelled background turn shows nothing of what it had done (its turn is out of the view too)
    hidden = ("failed", "cancelled") if data.get("background") else ("failed",)
    shown = record.status not in hidden and output_seq > 0
    output = output_items([e for e in turn if e.seq >= output_seq]) if shown else []
    if shown:  # a response's MCP listings come first; file search results only when `include` asked for them
        output = [*listing_items(data), *without_results(output, data.get("include"))]
    return {
        "id": record.id,
        "object": "response",
        "created_at": int(record.created_at),  # whole seconds, as OpenAI sends them (strict clients want an int)
        "completed_at": _seconds(data.get("completed_at")),
        "status": record.status,
        "model": data.get("model", ""),
        "output": output,
        "instructions": data.get("instructions"),
        "metadata": data.get("metadata") or {},
        "parallel_tool_calls": data.get("parallel_tool_calls", True),
        "tool_choice": data.get("tool_choice") or "auto",
        "tools": data.get("tools") or [],
        "temperature": data.get("temperature"),
        "top_p": data.get("top_p"),
        "max_output_tokens": data.get("max_output_tokens"),
        "max_tool_calls": data.get("max_tool_calls"),
        "previous_response_id": record.previous_response_id,
        "conversation": {"id": record.conversation_id} if data.get("conversation_visible", True) else None,
        "truncation": data.get("truncation") or "auto",
        "background": bool(data.get("background")),
        "store": data.get("store", True),
        "text": {"format": {"type": "text"}},
        "usage": usage_of(turn) if record.status in TERMINAL else None,
        "error": data.get("error"),
        "incomplete_details": data.get("incomplete_details"),
        "user": data.get("user"),
    }


def _seconds(value: object) -> int | None:
    return int(value) if isinstance(value, (int, float)) else None
