"""A loopback HTTP server that plays back scripted replies and records the requests it got.

    with FakeServer() as server:
        server.reply(Reply(200, json={...}))                       # one JSON answer
        server.reply(StreamReply([b"data: {...}\\n\\n", ...]))      # a chunked stream (SSE or binary)
        server.reply(StreamReply([...], cut=True))                 # ...closed mid-way, no final chunk
        client = SDK(base_url=server.url)
        ...
        server.requests[0].json                                    # what the SDK sent

Replies are consumed in order; `server.handler` (a function of the request) answers when the queue is empty, so a
test can serve any number of concurrent requests. A request with no reply gets a 599 naming the problem.
It runs on a real socket in a thread: the SDKs talk real HTTP to it.
"""

from __future__ import annotations

import json as jsonlib
import sys
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return jsonlib.loads(self.body) if self.body else None


@dataclass(frozen=True, slots=True)
class Reply:
    status: int = 200
    json: Any = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


@dataclass(frozen=True, slots=True)
class StreamReply:
    chunks: Sequence[bytes]
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "text/event-stream"
    cut: bool = False
    """Close the connection after the chunks without ending the body, as a dropped connection would."""


AnyReply = Reply | StreamReply


def sse(*events: Any, event_names: Sequence[str | None] | None = None, done: bool = False) -> list[bytes]:
    """Server-sent events: each JSON-able object as a `data:` line, optionally named, optionally `[DONE]` at the end."""
    out = []
    for n, event in enumerate(events):
        name = event_names[n] if event_names else None
        prefix = f"event: {name}\n" if name else ""
        data = event if isinstance(event, str) else jsonlib.dumps(event)
        out.append(f"{prefix}data: {data}\n\n".encode())
    if done:
        out.append(b"data: [DONE]\n\n")
    return out


async def drain(stream: AsyncIterator[Any], into: list[Any]) -> None:
    """Read a model's stream into `into` (run as a task, so a test can act while it is open)."""
    async for event in stream:
        into.append(event)


class FakeServer:
    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.handler: Callable[[Request], AnyReply] | None = None
        self._replies: list[AnyReply] = []
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _handler_class(self))
        self._httpd.daemon_threads = True
        # A 50 ms shutdown poll (not the default 0.5 s: one server per test adds up).
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-server", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def reply(self, *replies: AnyReply) -> None:
        with self._lock:
            self._replies.extend(replies)

    @property
    def pending(self) -> int:
        return len(self._replies)

    def _next(self, request: Request) -> AnyReply:
        with self._lock:
            self.requests.append(request)
            if self._replies:
                return self._replies.pop(0)
        if self.handler is not None:
            return self.handler(request)
        return Reply(599, json={"error": {"message": f"fake server has no reply for {request.method} {request.path}"}})

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # concurrent tests open many connections at once; 5 would make some wait out a SYN retry

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-answer is what several tests do on purpose; anything else is reported."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _handler_class(server: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # each SSE chunk goes out at once, not after the client's delayed ACK

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            request = Request(
                self.command, parts.path, parse_qs(parts.query), {k.lower(): v for k, v in self.headers.items()}, body
            )
            reply = server._next(request)
            if isinstance(reply, Reply):
                payload = reply.body if reply.body is not None else jsonlib.dumps(reply.json).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(payload)))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)
                return
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Transfer-Encoding", "chunked")
            for key, value in reply.headers.items():
                self.send_header(key, value)
            if reply.cut:
                self.send_header("Connection", "close")
            self.end_headers()
            for chunk in reply.chunks:
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.flush()
            if reply.cut:
                self.close_connection = True
                return
            self.wfile.write(b"0\r\n\r\n")

        do_GET = _serve
        do_POST = _serve
        do_DELETE = _serve

    return Handler
