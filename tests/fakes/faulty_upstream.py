"""`FaultyUpstream`: a loopback OpenAI Chat Completions server that streams slowly and fails on request.

    with FaultyUpstream(delay=0.05) as upstream:                # each answer: `pieces` deltas, `delay` s apart
        upstream.script("turn-7", "500", "ok")                   # the 1st request saying turn-7 gets a 500, then ok
        ... a server with `base_url = upstream.url` ...
        upstream.calls_for("turn-7")                            # what each of those requests got

A request is matched to a script by a tag anywhere in its last user message; the script's steps are used in order
and its last step repeats (`script(tag, "500")` always fails). Untagged requests, and every summary request (the
compaction prompt as system message; `FaultyUpstream(summaries=FAULT)` gives them all one fault), get the normal
answer: `answer to <last user text>`, streamed as OpenAI does (role chunk, text deltas, finish, usage chunk,
`[DONE]`). The faults, as a real upstream or network shows them:

    ok            the normal streamed answer
    500           500 with OpenAI's `server_error` body
    429           429 `rate_limit_exceeded` with `Retry-After: 0` (`429:N` for N seconds)
    stall         nothing at all until the client gives up (its timeout), before any header
    stall-mid     headers and half the deltas, then nothing until the client gives up
    reset         headers and half the deltas, then the connection is reset (RST, not a clean close)
    reset-early   the connection is reset as soon as the request is read, before any byte of an answer
    malformed     one delta, then a `data:` line that is not JSON
    empty         200, an SSE stream of only `data: [DONE]`
    context       400 `context_length_exceeded`, as OpenAI words it

It runs on real sockets in threads (one per connection), so a server under test in another process reaches it too.
`active` counts answers being written right now and `hung_up` the streams whose reader went away mid-answer: a
test waits for `active` to reach 0 to know no connection to the upstream was left open.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from contextfold.compaction import SUMMARY_PROMPT

from .fake_openai import chat_finish, chat_stream, chat_text, chat_usage, context_length_body, error_body, models_list

FAULTS = ("ok", "500", "429", "stall", "stall-mid", "reset", "reset-early", "malformed", "empty", "context")
MODEL = "faulty"


@dataclass(frozen=True, slots=True)
class Call:
    """One model request the upstream got, and what it did with it."""

    tag: str | None
    fault: str
    summary: bool
    text: str
    """The last user message's text."""
    body: Any


class FaultyUpstream:
    def __init__(self, *, delay: float = 0.0, pieces: int = 6, model: str = MODEL, summaries: str = "ok") -> None:
        self.delay = delay
        self.summaries = summaries
        """The fault every summary request gets (`stall`: a compaction that is planning until the upstream stops)."""
        self.pieces = pieces
        self.model = model
        self.calls: list[Call] = []
        self.active = 0
        self.hung_up = 0
        self._scripts: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="faulty-upstream", daemon=True
        )

    @property
    def url(self) -> str:
        """The base URL an OpenAI client takes (`.../v1`)."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def script(self, tag: str, *steps: str) -> None:
        """What the requests tagged `tag` get, in order; the last step repeats."""
        unknown = [s for s in steps if s.split(":")[0] not in FAULTS]
        if not steps or unknown:
            raise ValueError(f"unknown fault(s) {unknown}; known: {', '.join(FAULTS)}")
        with self._lock:
            self._scripts[tag] = list(steps)

    def calls_for(self, tag: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.tag == tag]

    def model_calls(self) -> list[Call]:
        """The requests for answers (not summaries)."""
        with self._lock:
            return [c for c in self.calls if not c.summary]

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()  # stalled and slow answers give up at once
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # --- deciding ------------------------------------------------------------------------------------------------

    def _decide(self, body: Any) -> Call:
        messages = body.get("messages") or []
        summary = (
            bool(messages)
            and messages[0].get("role") in ("system", "developer")
            and (_text(messages[0].get("content")).startswith(SUMMARY_PROMPT[:60]))
        )
        last = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        with self._lock:
            tags = sorted((t for t in self._scripts if t in last), key=len) if not summary else []
            tag = tags[-1] if tags else None  # the longest: `turn-1` and `turn-1-next` are two tags
            fault = self.summaries if summary else "ok"
            if tag is not None:
                steps = self._scripts[tag]
                fault = steps.pop(0) if len(steps) > 1 else steps[0]
            call = Call(tag, fault, summary, last, body)
            self.calls.append(call)
        return call

    def _answer_text(self, call: Call) -> str:
        if call.summary:
            return "## Goal\nkeep going\n## Current state\nsummarised by the faulty upstream"
        return f"answer to {' '.join(call.text.split()[:12])}"

    def _chunks(self, call: Call, prompt_tokens: int) -> list[bytes]:
        words = self._answer_text(call).split(" ")
        size = max(1, -(-len(words) // self.pieces))
        pieces = [" ".join(words[n : n + size]) + " " for n in range(0, len(words), size)]
        pieces[-1] = pieces[-1].rstrip()
        completion = max(1, sum(len(p) for p in pieces) // 4)
        return chat_stream(
            chat_text(*pieces, model=self.model), chat_finish("stop"), chat_usage(prompt_tokens, completion)
        )


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024  # hundreds of turns open their connections at once

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Readers that hang up mid-answer (a timeout, a cancelled turn) are what these tests cause on purpose."""


class _HungUp(Exception):
    """The reader of an answer went away."""


def _handler(upstream: FaultyUpstream) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                self._json(200, models_list({"id": upstream.model}).json)
            else:
                self._json(404, error_body(f"no route GET {self.path}", "not_found"))

        def do_POST(self) -> None:
            body_bytes = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._json(404, error_body(f"no route POST {self.path}", "not_found"))
                return
            call = upstream._decide(json.loads(body_bytes))
            kind, _, argument = call.fault.partition(":")
            if kind == "500":
                self._json(500, error_body("The server had an error processing your request.", None, "server_error"))
            elif kind == "429":
                retry_after = argument or "0"
                body = error_body("Rate limit reached; try again later.", "rate_limit_exceeded", "requests")
                self._json(429, body, {"retry-after": retry_after})
            elif kind == "context":
                self._json(400, context_length_body())
            elif kind == "stall":
                upstream._stop.wait(120)
                self.close_connection = True
            elif kind == "reset-early":
                self._reset()
            else:
                self._stream(call, kind, len(body_bytes) // 4)

        def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)

        def _stream(self, call: Call, kind: str, prompt_tokens: int) -> None:
            chunks = upstream._chunks(call, prompt_tokens)
            if kind == "empty":
                chunks = [b"data: [DONE]\n\n"]
            elif kind == "malformed":
                chunks = [chunks[0], chunks[1], b'data: {"id": "chatcmpl-fake", "choices": [{"delta": \n\n']
            elif kind in ("stall-mid", "reset"):
                chunks = chunks[: max(2, len(chunks) // 2)]
            with upstream._lock:
                upstream.active += 1
            try:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.flush()
                for n, chunk in enumerate(chunks):
                    if n and upstream.delay and upstream._stop.wait(upstream.delay):
                        return
                    self._write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                if kind == "stall-mid":
                    upstream._stop.wait(120)
                    self.close_connection = True
                elif kind == "reset":
                    self._reset()
                else:
                    self._write(b"0\r\n\r\n")
            except _HungUp:
                with upstream._lock:
                    upstream.hung_up += 1
                self.close_connection = True
            finally:
                with upstream._lock:
                    upstream.active -= 1

        def _write(self, data: bytes) -> None:
            try:
                self.wfile.write(data)
                self.wfile.flush()
            except OSError:
                raise _HungUp from None

        def _reset(self) -> None:
            """Close with an RST: SO_LINGER on, timeout 0."""
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True

    return Handler
