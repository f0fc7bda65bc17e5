"""The upstream of the `fidelity` section's proxy runs: an OpenAI-compatible Chat Completions server on loopback.

    python -m benchmarks.fidelity_upstream PORT MODE

It answers a user message with one `run_command` tool call and a tool result with a short text, streamed as Chat
Completions chunks with usage, as an agent's model would. Asked for a summary (the compaction prompt as system
message), it answers by MODE: `fail` refuses with HTTP 400 (the deterministic path), `useless` answers "Noted.",
`extractive` answers with the built-in extractive summariser of the `test` model. It records, for every request
that is not a summary, whether its messages extend the previous request's (GET /stats).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from typing import Any

from contextfold.compaction import SUMMARY_PROMPT
from contextfold.events import user
from contextfold.server._testmodel import extractive_summary
from contextfold.view import Window

ANSWER = "Done: the change is in place and the tests I ran pass."


class Upstream:
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.previous: list[str] | None = None
        self.requests = 0
        self.extends = 0
        self.summaries = 0
        self.calls = 0

    def answer(self, body: dict[str, Any]) -> tuple[int, bytes, bytes]:
        messages = body.get("messages", [])
        if messages and messages[0].get("role") == "system" and messages[0].get("content") == SUMMARY_PROMPT:
            self.summaries += 1
            if self.mode == "fail":
                error = {"error": {"message": "summaries are not available", "type": "invalid_request_error"}}
                return 400, json.dumps(error).encode(), b"application/json"
            limit = int(body.get("max_completion_tokens") or body.get("max_tokens") or 1000)
            if self.mode == "useless":
                text = "Noted."
            else:
                prompt = "\n".join(str(m.get("content") or "") for m in messages[1:])
                text = extractive_summary(Window(SUMMARY_PROMPT, None, limit, [user(prompt)]), limit)
            return 200, _stream(text, None), b"text/event-stream"
        keys = [hashlib.blake2b(json.dumps(m, sort_keys=True).encode(), digest_size=8).hexdigest() for m in messages]
        if self.previous is not None:
            self.requests += 1
            self.extends += keys[: len(self.previous)] == self.previous
        self.previous = keys
        if messages and messages[-1].get("role") == "user" and body.get("tools"):
            self.calls += 1
            return 200, _stream(None, f"call_{self.calls}"), b"text/event-stream"
        return 200, _stream(ANSWER, None), b"text/event-stream"

    def stats(self) -> bytes:
        return json.dumps({"requests": self.requests, "extends": self.extends, "summaries": self.summaries}).encode()


def _stream(text: str | None, call_id: str | None) -> bytes:
    base = {"id": "chatcmpl-fidelity", "object": "chat.completion.chunk", "created": 0, "model": "bench"}
    if call_id is not None:
        call = {"index": 0, "id": call_id, "type": "function", "function": {"name": "run_command", "arguments": "{}"}}
        delta: dict[str, Any] = {"role": "assistant", "tool_calls": [call]}
        finish = "tool_calls"
    else:
        delta, finish = {"role": "assistant", "content": text}, "stop"
    chunks = [
        {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]},
        {**base, "choices": [], "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}},
    ]
    return b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"


MODELS = json.dumps({"object": "list", "data": [{"id": "bench", "object": "model", "created": 0}]}).encode()


async def _handle(upstream: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path = lines[0].split(" ")[:2]
            length = next((int(x.split(":", 1)[1]) for x in lines if x.lower().startswith("content-length:")), 0)
            raw = await reader.readexactly(length) if length else b""
            status, body, kind = 200, MODELS, b"application/json"
            if method == "POST" and path.endswith("/chat/completions"):
                status, body, kind = upstream.answer(json.loads(raw))
            elif path.endswith("/stats"):
                body = upstream.stats()
            reason = b"OK" if status == 200 else b"Bad Request"
            writer.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n" % (status, reason, kind, len(body))
                + body
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port: int, mode: str) -> None:
    upstream = Upstream(mode)
    server = await asyncio.start_server(lambda r, w: _handle(upstream, r, w), "127.0.0.1", port, limit=2**26)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
