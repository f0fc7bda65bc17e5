"""The floor: the least a Python proxy can add to a request, served beside contextfold in the same run.

    python -m benchmarks._floor UPSTREAM_BASE PORT

A raw ASGI app under uvicorn (no framework, no parsing, no store) that forwards every request's method, path and
body to the upstream through one shared `httpx.AsyncClient` and streams the answer back chunk by chunk as it comes.
What contextfold adds beyond this is the cost of what it does (the log, the fold, the wire mapping), not of being
a Python HTTP service at all; the benchmarks print contextfold's added latency and CPU as a ratio to this one's.
"""

from __future__ import annotations

import sys
from typing import Any

import httpx
import uvicorn

Scope = dict[str, Any]
_FORWARDED = (b"content-type", b"authorization", b"accept")


class Floor:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.client: httpx.AsyncClient | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = [(k, v) for k, v in scope["headers"] if k in _FORWARDED]
        assert self.client is not None
        request = self.client.build_request(
            scope["method"], self.upstream + scope["path"], content=body, headers=headers
        )
        response = await self.client.send(request, stream=True)
        try:
            kind = response.headers.get("content-type", "application/json").encode()
            await send(
                {"type": "http.response.start", "status": response.status_code, "headers": [(b"content-type", kind)]}
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
                self.client = httpx.AsyncClient(timeout=60, limits=limits)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.client is not None:
                    await self.client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


if __name__ == "__main__":
    uvicorn.run(Floor(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", lifespan="on")
