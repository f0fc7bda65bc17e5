"""What every request handler reaches: the configuration, the store, the models, the locks and the metrics.

One `ServerState` per app, opened by `open_state` in the app's lifespan (and by the CLI's store commands, which
call the same operations with no server running). It holds no per-turn state: turns share only the view cache,
whose entries are used by one turn at a time under the conversation's lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi import Request

from .._errors import AuthenticationError
from ..runtime import Compactor, Embedder, Ingestor
from ..store import ServerStore, open_server_store
from ._config import ServerConfig
from ._locks import ConversationLocks, ViewCache
from ._registry import ModelRegistry
from .edge._metrics import Metrics
from .edge._replay import StreamBuffers
from .responses._background_runs import BackgroundRuns
from .responses._guardrails import Guardrails

log = logging.getLogger("contextfold.server")
DEFAULT_TENANT = "default"
_WIND_UP = 5.0
"""Seconds a closing state waits for the turns cancelled by the shutdown to be marked and released."""


@dataclass(slots=True)
class ServerState:
    config: ServerConfig
    store: ServerStore
    registry: ModelRegistry
    locks: ConversationLocks
    views: ViewCache
    metrics: Metrics
    streams: StreamBuffers
    keys_required: bool
    ingestor: Ingestor | None = None
    """Ingests the files queued in vector stores, in the background (None: the app's lifespan is not running)."""
    embedder: Embedder | None = None
    """Embeds chunks and search queries (None: no embeddings upstream is configured)."""
    guardrails: Guardrails = field(init=False)
    background: BackgroundRuns = field(default_factory=BackgroundRuns)
    compactor: Compactor = field(init=False)
    """Compactions off the request path (`runtime._compactor`), committed under the conversation's lease."""

    def __post_init__(self) -> None:
        self.compactor = Compactor(
            lambda conversation_id: self.locks.hold(conversation_id, queue=False, brief=True),
            current=lambda conversation: self.views.current(conversation.id, conversation.model),
            enabled=self.config.compact_background,
            observe=self.metrics.observe_background,
        )
        self.guardrails = Guardrails(self.config.guardrails, self.registry)


@contextlib.asynccontextmanager
async def open_state(
    config: ServerConfig,
    *,
    store: ServerStore | None = None,
    registry: ModelRegistry | None = None,
    metrics: Metrics | None = None,
    ingest: bool = True,
) -> AsyncIterator[ServerState]:
    """The server's state, opened from `config` and closed in order after: background runs stopped (their turns
    marked), the turns this process holds wound up, ingestion stopped, then the registry and the store closed. A
    `store` or `registry` passed in is used as is and left open. `ingest`: run the ingestion of queued files."""
    opened = store or await open_server_store(config.db)
    models = registry or ModelRegistry(config)
    locks = ConversationLocks(opened.leases, ttl=config.lease_ttl, queue=config.queue_turns)
    embedder = None
    if config.embeddings_url is not None and config.embeddings_model is not None:
        embedder = Embedder(config.embeddings_url, config.embeddings_model, api_key=config.embeddings_api_key)
    ingestor = Ingestor(opened.knowledge, embedder=embedder) if ingest else None
    # Files a restart cut off mid-ingestion are still queued in the store: this picks them up first.
    ingesting = asyncio.create_task(ingestor.run(), name="contextfold ingestion") if ingestor else None
    state: ServerState | None = None
    try:
        state = ServerState(
            config=config,
            store=opened,
            registry=models,
            locks=locks,
            views=ViewCache(opened, locks=locks),
            metrics=metrics or Metrics(),
            streams=StreamBuffers(max_bytes=config.max_replay_bytes),
            keys_required=await opened.keys.active() > 0,
            ingestor=ingestor,
            embedder=embedder,
        )
        yield state
    finally:
        if state is not None:
            await state.background.stop()  # their turns are marked before the locks go
            await state.compactor.drain()  # nothing half-written: planning dropped, commits end
        if not await locks.drained(_WIND_UP):
            log.warning("stopping with turns still running; they are marked interrupted when next held")
        if ingesting is not None:
            ingesting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ingesting
        if embedder is not None:
            await embedder.close()
        if registry is None:
            await models.close()
        if store is None:
            await opened.close()


def state_of(request: Request) -> ServerState:
    state: ServerState = request.app.state.server
    return state


TENANT_KEY_HEADER = "x-contextfold-key"
"""Carries the contextfold key when `Authorization` carries a key for the upstream (a proxy route that forwards)."""


def client_key(request: Request) -> str:
    """The key the client sent in `Authorization: Bearer` or `x-api-key` ('' when none)."""
    header = request.headers.get("authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else request.headers.get("x-api-key", "").strip()


async def tenant_of(request: Request) -> str:
    """The caller's tenant: from its API key (`X-Contextfold-Key`, else `Authorization`/`x-api-key`), or `default`
    when the server has no keys (loopback only)."""
    state = state_of(request)
    secret = request.headers.get(TENANT_KEY_HEADER, "").strip() or client_key(request)
    if not state.keys_required and not await _keys_exist(state):
        return DEFAULT_TENANT
    if not secret:
        raise AuthenticationError(
            "missing API key: send it as 'Authorization: Bearer <key>' (create one with `contextfold keys create`)"
        )
    key = await state.store.keys.verify(secret)
    if key is None:
        raise AuthenticationError("invalid or revoked API key")
    return key.tenant


async def _keys_exist(state: ServerState) -> bool:
    """Keys created while the server runs switch authentication on from then on."""
    if await state.store.keys.active():
        state.keys_required = True
    return state.keys_required
