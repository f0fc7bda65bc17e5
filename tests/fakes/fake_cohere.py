"""Cohere v2 chat on the wire: the SSE events of `POST /v2/chat` with `stream: true`, and error answers.

Each event is `event: <type>` plus `data: {"type": <type>, ...}`; the SDK dispatches on the `type` in the data.
Errors are JSON `{"message": ...}` with the HTTP status; the SDK raises a typed `ApiError` per status.
"""

from __future__ import annotations

from typing import Any

from ._server import Reply, StreamReply, sse


def events(*objs: dict[str, Any] | str) -> list[bytes]:
    """SSE chunks, each named after its `type` (a string is sent as raw, possibly malformed, data)."""
    names = [obj["type"] if isinstance(obj, dict) else None for obj in objs]
    return sse(*objs, event_names=names)


def message_start(message_id: str = "msg_1") -> dict[str, Any]:
    return {"type": "message-start", "id": message_id, "delta": {"message": {"role": "assistant"}}}


def content_start(index: int = 0) -> dict[str, Any]:
    return {"type": "content-start", "index": index, "delta": {"message": {"content": {"type": "text", "text": ""}}}}


def content_delta(text: str, index: int = 0) -> dict[str, Any]:
    return {"type": "content-delta", "index": index, "delta": {"message": {"content": {"text": text}}}}


def content_end(index: int = 0) -> dict[str, Any]:
    return {"type": "content-end", "index": index}


def tool_plan(text: str) -> dict[str, Any]:
    return {"type": "tool-plan-delta", "delta": {"message": {"tool_plan": text}}}


def tool_call(index: int, call_id: str, name: str, *pieces: str) -> list[dict[str, Any]]:
    """A tool call: its start (no arguments yet), its arguments in `pieces`, its end."""
    function = {"name": name, "arguments": ""}
    start = {
        "type": "tool-call-start",
        "index": index,
        "delta": {"message": {"tool_calls": {"id": call_id, "type": "function", "function": function}}},
    }
    deltas = [
        {
            "type": "tool-call-delta",
            "index": index,
            "delta": {"message": {"tool_calls": {"function": {"arguments": p}}}},
        }
        for p in pieces
    ]
    return [start, *deltas, {"type": "tool-call-end", "index": index}]


def message_end(
    finish_reason: str = "COMPLETE", input_tokens: int = 10, output_tokens: int = 5, cached: int = 0
) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "billed_units": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        "tokens": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }
    if cached:
        usage["cached_tokens"] = cached
    return {"type": "message-end", "delta": {"finish_reason": finish_reason, "usage": usage}}


def text_answer(*pieces: str, input_tokens: int = 10, output_tokens: int = 5, cached: int = 0) -> StreamReply:
    """A whole streamed text answer."""
    return StreamReply(
        events(
            message_start(),
            content_start(),
            *(content_delta(p) for p in pieces),
            content_end(),
            message_end("COMPLETE", input_tokens, output_tokens, cached),
        )
    )


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, json={"id": "err_1", "message": message}, headers=headers or {})
