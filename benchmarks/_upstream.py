"""A zero-latency OpenAI-compatible upstream for the server benchmarks: its own process, plain asyncio.

    python -m benchmarks._upstream PORT

Every `POST .../chat/completions` gets the same short answer at once: streamed as Chat Completions chunks with usage
when the request asks for a stream, one JSON completion when it does not. `POST .../responses` answers the same way
in the Responses wire format (the floor's Responses turns forward there). `GET .../models` lists one model. In its
own process, so the benchmark's client and the server under test never wait on its interpreter lock.

A request whose body contains `STALL` (below) gets its first chunk at once and the rest `STALL_SECONDS` later (a
non-streamed one its whole answer after that time): how the benchmarks tell a proxy that streams from one that
buffers the whole answer, or asks the upstream for a whole one, before sending it on.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys

ANSWER = "Checked: the function returns early when the list is empty, so the caller sees None."
STALL = b"STALL-BETWEEN-CHUNKS"
STALL_SECONDS = 0.3
USAGE = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}


def _events(chunks: list[dict[str, object]], done: bool) -> list[bytes]:
    frames = [f"data: {json.dumps(c)}\n\n".encode() for c in chunks]
    return [*frames, b"data: [DONE]\n\n"] if done else frames


def _chat_stream() -> list[bytes]:
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": "bench"}
    return _events(
        [
            {
                **base,
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": ANSWER}, "finish_reason": None}],
            },
            {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            {**base, "choices": [], "usage": USAGE},
        ],
        done=True,
    )


CHAT = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "bench",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}],
        "usage": USAGE,
    }
).encode()
_MESSAGE = {
    "type": "message",
    "id": "msg_bench",
    "role": "assistant",
    "status": "completed",
    "content": [{"type": "output_text", "text": ANSWER, "annotations": []}],
}
_RESPONSE = {
    "id": "resp_bench",
    "object": "response",
    "created_at": 0,
    "status": "completed",
    "model": "bench",
    "output": [_MESSAGE],
    "usage": {"input_tokens": 100, "output_tokens": 20, "total_tokens": 120},
}
RESPONSE = json.dumps(_RESPONSE).encode()


def _responses_stream() -> list[bytes]:
    created = {**_RESPONSE, "status": "in_progress", "output": []}
    return [
        f"event: {c['type']}\ndata: {json.dumps(c)}\n\n".encode()
        for c in (
            {"type": "response.created", "sequence_number": 0, "response": created},
            {
                "type": "response.output_text.delta",
                "sequence_number": 1,
                "item_id": "msg_bench",
                "output_index": 0,
                "content_index": 0,
                "delta": ANSWER,
            },
            {"type": "response.completed", "sequence_number": 2, "response": _RESPONSE},
        )
    ]


CHAT_STREAM, RESPONSES_STREAM = _chat_stream(), _responses_stream()
MODELS = json.dumps({"object": "list", "data": [{"id": "bench", "object": "model", "created": 0}]}).encode()
# A byte search rather than a JSON parse: the answer is the same whatever the body says, and parsing a 400 KB
# history here would add the upstream's own parse to every system alike for nothing.
_STREAMED = re.compile(rb'"stream"\s*:\s*true')


def _answer(method: str, path: str, body: bytes) -> tuple[list[bytes], bytes]:
    stream = bool(_STREAMED.search(body))
    if method == "POST" and path.rstrip("/").endswith("/chat/completions"):
        return (CHAT_STREAM, b"text/event-stream") if stream else ([CHAT], b"application/json")
    if method == "POST" and path.rstrip("/").endswith("/responses"):
        return (RESPONSES_STREAM, b"text/event-stream") if stream else ([RESPONSE], b"application/json")
    return [MODELS], b"application/json"


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path = lines[0].split(" ")[:2]
            length = next((int(x.split(":", 1)[1]) for x in lines if x.lower().startswith("content-length:")), 0)
            body = await reader.readexactly(length) if length else b""
            parts, kind = _answer(method, path, body)
            size = sum(len(p) for p in parts)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: " + kind + b"\r\ncontent-length: " + str(size).encode())
            writer.write(b"\r\n\r\n")
            if STALL in body:
                # A model that takes STALL_SECONDS to finish: the streamed text comes first, a whole answer only
                # at the end (so a proxy that asks for a whole answer cannot pass the text on any sooner).
                if len(parts) > 1:
                    writer.write(parts[0])
                    await writer.drain()
                    parts = parts[1:]
                await asyncio.sleep(STALL_SECONDS)
            writer.write(b"".join(parts))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(_handle, "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
