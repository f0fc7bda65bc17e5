"""A zero-latency OpenAI-compatible upstream for the server benchmarks: its own process, plain asyncio.

    python -m benchmarks._upstream PORT

Every `POST .../chat/completions` gets the same short answer at once, streamed as Chat Completions chunks with
usage; `GET .../models` lists one model. In its own process, so the benchmark's client and the server under test
never wait on its interpreter lock.
"""

from __future__ import annotations

import asyncio
import json
import sys

ANSWER = "Checked: the function returns early when the list is empty, so the caller sees None."


def _sse() -> bytes:
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": "bench"}
    chunks = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ANSWER}, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {**base, "choices": [], "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}},
    ]
    return b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"


STREAM = _sse()
MODELS = json.dumps({"object": "list", "data": [{"id": "bench", "object": "model", "created": 0}]}).encode()


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path = lines[0].split(" ")[:2]
            length = next((int(x.split(":", 1)[1]) for x in lines if x.lower().startswith("content-length:")), 0)
            if length:
                await reader.readexactly(length)
            if method == "POST" and path.endswith("/chat/completions"):
                body, kind = STREAM, b"text/event-stream"
            else:
                body, kind = MODELS, b"application/json"
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: "
                + kind
                + b"\r\ncontent-length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
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
