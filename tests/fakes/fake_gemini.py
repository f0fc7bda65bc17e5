"""Wire shapes of Gemini's `streamGenerateContent?alt=sse`, for the loopback fake server.

Each SSE `data:` line is one GenerateContentResponse JSON (REST camelCase); errors are Google's error body
`{"error": {"code", "message", "status", "details"}}`, as an HTTP answer or as a chunk in the stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._server import Reply, StreamReply, sse

MODEL = "gemini-2.5-flash"


def chunk(
    *parts: dict[str, Any], finish: str | None = None, usage: dict[str, int] | None = None, model: str = MODEL
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": list(parts)}, "index": 0}
    if finish is not None:
        candidate["finishReason"] = finish
    out: dict[str, Any] = {"candidates": [candidate], "modelVersion": model}
    if usage is not None:
        out["usageMetadata"] = usage
    return out


def text(value: str) -> dict[str, Any]:
    return {"text": value}


def thought(value: str) -> dict[str, Any]:
    return {"text": value, "thought": True}


def call(name: str, args: dict[str, Any], call_id: str | None = None) -> dict[str, Any]:
    function_call: dict[str, Any] = {"name": name, "args": args}
    if call_id is not None:
        function_call["id"] = call_id
    return {"functionCall": function_call}


def usage(prompt: int = 10, candidates: int = 5, cached: int = 0, thoughts: int = 0) -> dict[str, int]:
    out = {"promptTokenCount": prompt, "candidatesTokenCount": candidates, "totalTokenCount": prompt + candidates}
    if cached:
        out["cachedContentTokenCount"] = cached
    if thoughts:
        out["thoughtsTokenCount"] = thoughts
    return out


def stream(*chunks: dict[str, Any], cut: bool = False) -> StreamReply:
    return StreamReply(sse(*chunks), cut=cut)


def text_reply(
    pieces: Sequence[str], *, finish: str = "STOP", token_usage: dict[str, int] | None = None
) -> StreamReply:
    """A whole streamed text answer: one chunk per piece, the last with the finish reason and usage."""
    chunks = [chunk(text(piece)) for piece in pieces[:-1]]
    chunks.append(chunk(text(pieces[-1]), finish=finish, usage=token_usage or usage()))
    return stream(*chunks)


def error_body(code: int, status: str, message: str, details: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status, "details": list(details)}}


def error_reply(
    code: int,
    status: str,
    message: str,
    *,
    headers: dict[str, str] | None = None,
    details: Sequence[dict[str, Any]] = (),
) -> Reply:
    return Reply(code, json=error_body(code, status, message, details), headers=headers or {})


def retry_info(delay: str) -> dict[str, Any]:
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}
