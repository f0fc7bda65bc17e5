"""The ASGI app: routes, the error mapper, the edge (size limits, metrics and request logs; the hot routes served
past FastAPI's stack, `edge._asgi`), and the lifespan that opens and closes the store and the model clients.

    app = create_app(ServerConfig(db="contextfold.db"))      # then serve it with uvicorn (see `_main.run`)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from .. import __version__
from ..store import ServerStore
from ._config import ServerConfig
from ._registry import ModelRegistry
from ._state import open_state, state_of, tenant_of
from .edge._asgi import Body, Edge, EdgeSettings, Hot, serve_hot
from .edge._errors import install
from .edge._metrics import Metrics
from .inspect import _inspect, _ui
from .proxy import _proxy
from .responses import _background, _conversations, _files, _moderations, _responses, _vector_stores
from .responses._schemas import decode_create

log = logging.getLogger("contextfold.server")


def create_app(
    config: ServerConfig, *, store: ServerStore | None = None, registry: ModelRegistry | None = None
) -> FastAPI:
    """The server app. A `store` or `registry` passed in is used as is and left open; otherwise the app opens
    (and migrates) the store at `config.db`, and closes what it opened when it stops."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_state(config, store=store, registry=registry, metrics=metrics) as state:
            app.state.server = state
            yield

    metrics = Metrics()
    app = _App(
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
    limits = config.limits
    app.edge = EdgeSettings(metrics, limits.max_body_bytes, limits.max_file_bytes + _MULTIPART_SLACK)
    app.hot = _HOT
    app.add_middleware(Edge, settings=app.edge)
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


class _App(FastAPI):
    """FastAPI, with the hot routes served past its stack (`edge._asgi.serve_hot`) while its OpenTelemetry layer
    is off. They stay FastAPI routes too: /openapi.json documents them, and FastAPI serves what they hand on."""

    edge: EdgeSettings
    hot: dict[str, Hot]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.hot.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if handler is None or self.root_path or self._traced():
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self  # as Starlette sets it: `Request.app` is how a handler finds the state
        await serve_hot(self.edge, scope, receive, send, handler, scope["path"], super().__call__)

    def _traced(self) -> bool:
        """Whether FastAPI's own telemetry is on (a tracer, meter or logger provider configured): then its span
        wraps every request, the hot ones too."""
        telemetry = getattr(self, "_native_telemetry", None)
        return telemetry is not None and bool(telemetry.enabled())


async def _hot_responses(request: Request, body: Body) -> Response | None:
    raw = await body.read()  # the body first, then the key, as FastAPI orders them
    decoded = decode_create(raw) if _is_json(request) else None
    if decoded is None:
        return None  # FastAPI validates it with the documented model, and words the 400
    return await _responses.respond_to(decoded, await tenant_of(request), state_of(request), request)


async def _hot_chat(request: Request, body: Body) -> Response | None:
    tenant = await tenant_of(request)  # the key first: an unknown caller's body is never read
    # the decoder checks what is new for lone surrogates (`_chat_decode`), not the whole resent history
    return await _proxy.chat_turn(request, await body.read(surrogates=False), tenant, state_of(request))


async def _hot_messages(request: Request, body: Body) -> Response | None:
    tenant = await tenant_of(request)
    return await _proxy.messages_turn(request, await body.read(surrogates=False), tenant, state_of(request))


_HOT: dict[str, Hot] = {
    "/v1/responses": _hot_responses,
    "/v1/chat/completions": _hot_chat,
    "/v1/messages": _hot_messages,
}


def _is_json(request: Request) -> bool:
    """Whether FastAPI would read the body as JSON: its content type is `application/json` (the common spelling;
    any other, `+json` types among them, is left to FastAPI's own reading)."""
    kind = request.headers.get("content-type", "").lower()
    return kind == "application/json" or kind.startswith("application/json;")
