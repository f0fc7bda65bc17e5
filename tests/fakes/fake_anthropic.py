"""Wire shapes of the Anthropic Messages API, for the loopback fake server: SSE streams and error bodies.

A stream is a list of `(event name, data)` pairs, as the API sends them (`event: content_block_delta` then a
`data:` line). The SDK ignores events without a name, so every builder here names its events.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._server import Reply, StreamReply, sse

Event = tuple[str, dict[str, Any]]


def message_start(model: str = "claude-sonnet-4-6", input_tokens: int = 10, cache_read: int = 0) -> Event:
    usage = {"input_tokens": input_tokens, "output_tokens": 1, "cache_read_input_tokens": cache_read}
    message: dict[str, Any] = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage,
    }
    return ("message_start", {"type": "message_start", "message": message})


def text_block(index: int, pieces: Sequence[str]) -> list[Event]:
    start = {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
    deltas = [
        {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}
        for piece in pieces
    ]
    return [("content_block_start", start), *[("content_block_delta", d) for d in deltas], block_stop(index)]


def tool_block(index: int, call_id: str, name: str, pieces: Sequence[str]) -> list[Event]:
    block = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
    start = {"type": "content_block_start", "index": index, "content_block": block}
    deltas = [
        {"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": piece}}
        for piece in pieces
    ]
    return [("content_block_start", start), *[("content_block_delta", d) for d in deltas], block_stop(index)]


def thinking_block(index: int, pieces: Sequence[str], signature: str) -> list[Event]:
    block = {"type": "thinking", "thinking": "", "signature": ""}
    start = {"type": "content_block_start", "index": index, "content_block": block}
    deltas: list[dict[str, Any]] = [{"type": "thinking_delta", "thinking": piece} for piece in pieces]
    deltas.append({"type": "signature_delta", "signature": signature})
    events = [("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}) for d in deltas]
    return [("content_block_start", start), *events, block_stop(index)]


def block_stop(index: int) -> Event:
    return ("content_block_stop", {"type": "content_block_stop", "index": index})


def message_delta(stop_reason: str = "end_turn", output_tokens: int = 5) -> Event:
    delta = {"stop_reason": stop_reason, "stop_sequence": None}
    return ("message_delta", {"type": "message_delta", "delta": delta, "usage": {"output_tokens": output_tokens}})


def message_stop() -> Event:
    return ("message_stop", {"type": "message_stop"})


def error_event(kind: str = "overloaded_error", message: str = "Overloaded") -> Event:
    return ("error", error_body(kind, message))


def error_body(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


def chunks(events: Sequence[Event]) -> list[bytes]:
    return sse(*[data for _, data in events], event_names=[name for name, _ in events])


def stream(events: Sequence[Event], *, cut: bool = False) -> StreamReply:
    return StreamReply(chunks(events), cut=cut)


def text_reply(
    pieces: Sequence[str],
    *,
    input_tokens: int = 10,
    output_tokens: int = 5,
    cache_read: int = 0,
    model: str = "claude-sonnet-4-6",
) -> StreamReply:
    """A whole streamed text answer."""
    return stream(
        [
            message_start(model, input_tokens, cache_read),
            *text_block(0, pieces),
            message_delta("end_turn", output_tokens),
            message_stop(),
        ]
    )


def error_reply(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, json=error_body(kind, message), headers=headers or {})


def malformed_event() -> bytes:
    """A named event whose data is not JSON."""
    return b"event: content_block_delta\ndata: {not json\n\n"
