"""Bedrock ConverseStream on the wire: the AWS event-stream binary framing and AWS JSON error answers.

ConverseStream answers `POST /model/{modelId}/converse-stream` with `application/vnd.amazon.eventstream`: a series
of binary messages, each

    total length (u32 BE) | headers length (u32 BE) | CRC32 of those 8 bytes | headers | payload | CRC32 of all before

with string headers `:event-type` (the event's name, e.g. `contentBlockDelta`), `:content-type` and
`:message-type` (`event`, or `exception` with `:exception-type` naming the error). botocore checks both CRCs
(botocore/eventstream.py), so these are real messages. Errors before the stream are plain HTTP answers: the code in
the `x-amzn-ErrorType` header (`Code:namespace`), the message in the JSON body's `message`.
"""

from __future__ import annotations

import json
import struct
import threading
import zlib
from collections.abc import Iterator, Sequence
from typing import Any, overload

from ._server import Reply, StreamReply

EVENTSTREAM = "application/vnd.amazon.eventstream"


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    # name length (u8), name, value type 7 (string), value length (u16 BE), value
    return bytes([len(raw_name)]) + raw_name + b"\x07" + struct.pack(">H", len(raw_value)) + raw_value


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message with valid prelude and message CRCs."""
    raw_headers = b"".join(_header(name, value) for name, value in headers.items())
    total = 12 + len(raw_headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(raw_headers))
    head = prelude + struct.pack(">I", zlib.crc32(prelude))
    body = head + raw_headers + payload
    return body + struct.pack(">I", zlib.crc32(body))


def event(name: str, payload: Any) -> bytes:
    """An event message; `payload` is JSON-encoded unless it is already bytes (for malformed payload tests)."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return frame({":event-type": name, ":content-type": "application/json", ":message-type": "event"}, data)


def exception(name: str, message: str) -> bytes:
    """An exception message sent mid-stream (`name` is the member name, e.g. `throttlingException`)."""
    headers = {":exception-type": name, ":content-type": "application/json", ":message-type": "exception"}
    return frame(headers, json.dumps({"message": message}).encode())


# --- the events of one answer ----------------------------------------------------------------------------------


def message_start() -> bytes:
    return event("messageStart", {"role": "assistant"})


def text_deltas(*pieces: str, index: int = 0) -> list[bytes]:
    return [event("contentBlockDelta", {"contentBlockIndex": index, "delta": {"text": p}}) for p in pieces]


def tool_use(index: int, tool_use_id: str, name: str, *pieces: str) -> list[bytes]:
    """A tool-use block: its start, its input JSON in `pieces`, its stop."""
    start = {"contentBlockIndex": index, "start": {"toolUse": {"toolUseId": tool_use_id, "name": name}}}
    deltas = [
        event("contentBlockDelta", {"contentBlockIndex": index, "delta": {"toolUse": {"input": p}}}) for p in pieces
    ]
    return [event("contentBlockStart", start), *deltas, event("contentBlockStop", {"contentBlockIndex": index})]


def message_stop(reason: str = "end_turn") -> bytes:
    return event("messageStop", {"stopReason": reason})


def metadata(input_tokens: int = 10, output_tokens: int = 5, cache_read: int = 0, cache_write: int = 0) -> bytes:
    usage = {"inputTokens": input_tokens, "outputTokens": output_tokens, "totalTokens": input_tokens + output_tokens}
    if cache_read:
        usage["cacheReadInputTokens"] = cache_read
    if cache_write:
        usage["cacheWriteInputTokens"] = cache_write
    return event("metadata", {"usage": usage, "metrics": {"latencyMs": 12}})


def text_answer(*pieces: str, input_tokens: int = 10, output_tokens: int = 5, cache_read: int = 0) -> list[bytes]:
    """A whole streamed text answer."""
    return [
        message_start(),
        *text_deltas(*pieces),
        event("contentBlockStop", {"contentBlockIndex": 0}),
        message_stop("end_turn"),
        metadata(input_tokens, output_tokens, cache_read),
    ]


def stream(chunks: list[bytes], *, cut: bool = False) -> StreamReply:
    return StreamReply(chunks, content_type=EVENTSTREAM, cut=cut)


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Reply:
    """An AWS rest-json error answer, the code in `x-amzn-ErrorType` as Bedrock sends it."""
    all_headers = {"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/com.amazon.bedrock/"}
    all_headers.update(headers or {})
    return Reply(status, json={"message": message}, headers=all_headers)


class Stalled(Sequence[bytes]):
    """Chunks that the fake server sends, then stalls on (no end, no close) until `release` or 30 s pass: a
    server that stops answering mid-stream. The server writes what it iterates, so the stall is in `__iter__`."""

    def __init__(self, chunks: Sequence[bytes]) -> None:
        self._chunks = list(chunks)
        self._released = threading.Event()
        self.stalled = threading.Event()

    def release(self) -> None:
        self._released.set()

    def __iter__(self) -> Iterator[bytes]:
        yield from self._chunks
        self.stalled.set()
        self._released.wait(30)

    def __len__(self) -> int:
        return len(self._chunks)

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[bytes]: ...
    def __getitem__(self, index: int | slice) -> bytes | Sequence[bytes]:
        return self._chunks[index]
