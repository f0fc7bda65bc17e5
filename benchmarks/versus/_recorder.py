"""A zero-latency upstream that remembers what it was sent: which turns reached the model's context.

    python -m benchmarks.versus._recorder PORT

Like `benchmarks/_upstream.py` (streamed Chat Completions answers at once, one model on `GET .../models`), except
that each answer names the request's last user message (`answer to: <text>`), so a later request shows which
question each answer in its history belongs to, and every chat request's messages are kept in memory for
`GET .../requests` (`DELETE .../requests` forgets them). Used only for the correctness row, never for timings.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from .._upstream import MODELS

_requests: list[list[dict[str, Any]]] = []


def _text(content: Any) -> str:
    """A message's text, whether its content is a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _answer(messages: list[dict[str, Any]]) -> bytes:
    question = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    base = {"id": "chatcmpl-rec", "object": "chat.completion.chunk", "created": 0, "model": "bench"}
    delta = {"role": "assistant", "content": f"answer to: {question}"}
    chunks = [
        {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {**base, "choices": [], "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}},
    ]
    return b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path = lines[0].split(" ")[:2]
            length = next((int(x.split(":", 1)[1]) for x in lines if x.lower().startswith("content-length:")), 0)
            body = await reader.readexactly(length) if length else b""
            kind = b"application/json"
            if method == "POST" and path.endswith("/chat/completions"):
                sent = json.loads(body)["messages"]
                _requests.append([{"role": m.get("role"), "text": _text(m.get("content"))} for m in sent])
                payload, kind = _answer(sent), b"text/event-stream"
            elif path.endswith("/requests"):
                payload = json.dumps(_requests).encode()
                if method == "DELETE":
                    _requests.clear()
            else:
                payload = MODELS
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: "
                + kind
                + b"\r\ncontent-length: "
                + str(len(payload)).encode()
                + b"\r\n\r\n"
                + payload
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
