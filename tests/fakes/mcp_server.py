"""Real MCP servers for the tests, built with the `mcp` package's own server classes, on loopback.

    with mcp_server("streamable") as url:   # http://127.0.0.1:PORT/mcp  (or "sse": .../sse)
        ...

Tools: `add(a, b)`, `lookup(key)` (a knowledge base answer), `fail(message)` (a tool error), `slow(seconds)`
(sleeps, for timeouts), and `whoami()` (says whether an Authorization header came, and its length, never its
value: the tests check that headers reach the server and nothing else).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Literal

import uvicorn
from mcp.server.mcpserver import Context, MCPServer

FACTS = {"heron": "The launch code for project heron is 7741."}


def build() -> MCPServer:
    server = MCPServer("contextfold-test")

    @server.tool()
    def add(a: int, b: int) -> str:
        """Add two integers."""
        return str(a + b)

    @server.tool()
    def lookup(key: str) -> str:
        """Look a project up in the knowledge base."""
        return FACTS.get(key.lower(), f"no entry for {key}")

    @server.tool()
    def fail(message: str) -> str:
        """Always fails with the message."""
        raise ValueError(message)

    @server.tool()
    async def slow(seconds: float) -> str:
        """Sleep, then answer."""
        await asyncio.sleep(seconds)
        return "done"

    @server.tool()
    def whoami(ctx: Context) -> str:
        """Which credentials the request carried."""
        request = ctx.request_context.request
        headers = getattr(request, "headers", {}) or {}
        given = headers.get("authorization")
        return f"an authorization header of {len(given)} characters" if given else "no authorization header"

    return server


@contextlib.contextmanager
def mcp_server(transport: Literal["streamable", "sse"]) -> Iterator[str]:
    server = build()
    app = server.streamable_http_app() if transport == "streamable" else server.sse_app()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not running.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the MCP test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/{'mcp' if transport == 'streamable' else 'sse'}"
    finally:
        running.should_exit = True
        thread.join(timeout=10)
