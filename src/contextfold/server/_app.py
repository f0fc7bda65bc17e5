"""The ASGI app: routes, the error mapper, size limits, metrics and request logs, and the lifespan that opens
and closes the store and the model clients.

    app = create_app(ServerConfig(db="contextfold.db"))      # then serve it with uvicorn (see `_main.run`)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from .._errors import PayloadTooLargeError
from ..runtime import Ingestor
from ..store import ServerStore, open_server_store
from . import _background, _conversations, _files, _inspect, _moderations, _proxy, _responses, _ui, _vector_stores
from ._config import ServerConfig
from ._errors import api_error, error_response, install
from ._locks import ConversationLocks, ViewCache
from ._metrics import Metrics
from ._registry import ModelRegistry
from ._replay import StreamBuffers
from ._state import ServerState, state_of, tenant_of
from ._text import RefuseLoneSurrogates

log = logging.getLogger("contextfold.server")
_WIND_UP = 5.0
"""Seconds the app waits, as it stops, for the turns cancelled by the shutdown to be marked and released."""


def create_app(
    config: ServerConfig, *, store: ServerStore | None = None, registry: ModelRegistry | None = None
) -> FastAPI:
    """The server app. A `store` or `registry` passed in is used as is and left open; otherwise the app opens
    (and migrates) the store at `config.db`, and closes what it opened when it stops."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_store = store is None
        opened = store or await open_server_store(config.db)
        models = registry or ModelRegistry(config)
        locks = ConversationLocks(opened.leases, ttl=config.lease_ttl, queue=config.queue_turns)
        ingestor = Ingestor(opened.knowledge)
        # Files a restart cut off mid-ingestion are still queued in the store: this picks them up first.
        ingesting = asyncio.create_task(ingestor.run(), name="contextfold ingestion")
        try:
            app.state.server = ServerState(
                config=config,
                store=opened,
                registry=models,
                locks=locks,
                views=ViewCache(opened),
                metrics=metrics,
                streams=StreamBuffers(max_bytes=config.max_replay_bytes),
                keys_required=await opened.keys.active() > 0,
                ingestor=ingestor,
            )
            yield
        finally:
            if hasattr(app.state, "server"):
                await app.state.server.background.stop()  # their turns are marked before the locks go
            if not await locks.drained(_WIND_UP):
                log.warning("stopping with turns still running; they are marked interrupted when next held")
            ingesting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ingesting
            if registry is None:
                await models.close()
            if own_store:
                await opened.close()

    metrics = Metrics()
    app = FastAPI(
        title="contextfold",
        version=__version__,
        summary="OpenAI-compatible Responses and Conversations API over an append-only event log, with compaction.",
        lifespan=lifespan,
    )
    install(app)
    app.include_router(_responses.router)
    app.include_router(_conversations.router)
    app.include_router(_conversations.extensions)
    app.include_router(_inspect.inspect)
    app.include_router(_ui.ui)
    app.include_router(_proxy.router)
    app.include_router(_files.router)
    app.include_router(_vector_stores.router)
    app.include_router(_moderations.router)
    app.include_router(_background.router)
    _add_operations(app)
    app.add_middleware(RefuseLoneSurrogates)
    app.add_middleware(_Observe, metrics=metrics)
    app.add_middleware(
        _Uploads, limit=config.limits.max_body_bytes, uploads=config.limits.max_file_bytes + _MULTIPART_SLACK
    )
    return app


def _add_operations(app: FastAPI) -> None:
    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    async def readyz(request: Request) -> Response:
        """The process can serve: the database answers."""
        state = state_of(request)
        try:
            await state.store.conversations.list(limit=1)
        except Exception as exc:
            return JSONResponse({"status": "unavailable", "reason": str(exc)}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", tags=["operations"])
    async def metrics(request: Request) -> Response:
        """Prometheus metrics."""
        return PlainTextResponse(state_of(request).metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models", tags=["models"], dependencies=[Depends(tenant_of)])
    async def models(request: Request) -> dict[str, Any]:
        """The model names this server answers to (behind the API keys, like every /v1 route)."""
        names = state_of(request).registry.names()
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "contextfold"} for name in names]
        return {"object": "list", "data": data}


_MULTIPART_SLACK = 64 * 1024
"""What a file upload's multipart framing (boundaries, part headers, the purpose field) may add to the file."""


class _Uploads:
    """A file upload (`POST /v1/files`) under its own, larger body limit; every other request under the usual."""

    def __init__(self, app: ASGIApp, limit: int, uploads: int) -> None:
        self.usual = _BodyLimit(app, limit)
        self.uploads = _BodyLimit(app, uploads, name="max_file_bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        upload = scope["type"] == "http" and scope["path"] == "/v1/files" and scope["method"] == "POST"
        await (self.uploads if upload else self.usual)(scope, receive, send)


class _BodyLimit:
    """Refuses a body over the limit with 413 before reading it whole: by Content-Length when it is sent, else
    while it streams in. The 413 closes the connection (`connection: close`): the server then stops reading, so
    the client cannot go on sending the rest."""

    def __init__(self, app: ASGIApp, limit: int, name: str = "max_body_bytes") -> None:
        self.app = app
        self.limit = limit
        self.name = name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise PayloadTooLargeError(self._message())
            return message

        async def closing(message: Message) -> None:
            # Over the limit, whoever answers (the route's error handler, usually), the rest is never read.
            if message["type"] == "http.response.start" and seen > self.limit:
                message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, counted, closing)
        except PayloadTooLargeError:
            await self._refuse(scope, receive, send)

    def _message(self) -> str:
        return f"the request body is over the {self.limit}-byte limit ({self.name}); send less per request"

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(scope["path"], api_error(PayloadTooLargeError(self._message())))
        response.headers["connection"] = "close"
        await response(scope, receive, send)


class _Observe:
    """Request metrics and one structured log line per request (method, route, status, duration)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")  # the route's template: its parameters are not labels
            method = scope["method"] if scope["method"] in _METHODS else "other"  # any token is a method in HTTP
            elapsed = time.perf_counter() - started
            self.metrics.requests.labels(method, path, str(status)).inc()
            self.metrics.latency.labels(method, path).observe(elapsed)
            if status >= 400:
                self.metrics.errors.labels(str(status)).inc()
            log.info(
                "%s %s %d %.1fms",
                scope["method"],
                _loggable(scope["path"]),
                status,
                elapsed * 1000,
                extra={"method": scope["method"], "route": path, "status": status, "ms": round(elapsed * 1000, 2)},
            )


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""The methods counted by name in /metrics; any other is counted as `other`, so the series stay bounded."""


def _loggable(path: str) -> str:
    """The path with its control characters escaped: a client sending `%0A` cannot start a log line of its own."""
    return path if path.isprintable() else path.encode("unicode_escape").decode("ascii")
