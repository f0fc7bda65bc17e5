"""What every request handler reaches: the configuration, the store, the models, the locks and the metrics.

One `ServerState` per app, built in the app's lifespan. It holds no per-turn state: turns share only the view
cache, whose entries are used by one turn at a time under the conversation's lock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import Request

from .._errors import AuthenticationError
from ..runtime import Ingestor, TurnSetup
from ..store import ServerStore
from ._background_runs import BackgroundRuns
from ._config import ServerConfig
from ._guardrails import Guardrails
from ._locks import ConversationLocks, ViewCache
from ._metrics import Metrics
from ._registry import ModelRegistry
from ._replay import StreamBuffers

DEFAULT_TENANT = "default"


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
    guardrails: Guardrails = field(init=False)
    background: BackgroundRuns = field(default_factory=BackgroundRuns)
    after_turn: Callable[[TurnSetup], None] | None = None
    """Called by the turn lifecycle once a turn's writes are done and its conversation released (compaction off
    the request path hooks in here)."""

    def __post_init__(self) -> None:
        self.guardrails = Guardrails(self.config.guardrails, self.registry)
        self.views.locks = self.locks  # reads recover turns a crash left open, holding the conversation to do it


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
