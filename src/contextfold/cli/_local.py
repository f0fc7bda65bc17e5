"""What the store-level commands share: the server's state, built in this process from `serve`'s configuration.

`contextfold conversations` answers with the server's own handlers (the inspector's `/events`, the conversation
extensions), called directly rather than over HTTP, so no server needs to run. They need what the app's lifespan
builds: the configuration, the store, the model registry, the turn locks (leases in the store, so a command and a
running server never work on one conversation at once) and the view cache.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..server._state import ServerState
    from ..store import ConversationInfo, ServerStore

Action = Callable[["ServerState", argparse.Namespace], Awaitable[int]]


def run_action(action: Action) -> Callable[[argparse.Namespace], int]:
    """The argparse handler for an action: `action(state, args)` on a local server state, its exit code."""

    def handler(args: argparse.Namespace) -> int:
        async def main() -> int:
            async with local_state(args.db, args.config) as state:
                return await action(state, args)

        return asyncio.run(main())

    return handler


@asynccontextmanager
async def local_state(db: str | None, config_file: str | None) -> AsyncIterator[ServerState]:
    """What the server's handlers reach, built from the same configuration `serve` would load, and closed after.

    Built as the app's lifespan builds it (`server/_app.py`), so the handlers behave here as they do there.
    """
    from ..server._config import load_config
    from ..server._locks import ConversationLocks, ViewCache
    from ..server._metrics import Metrics
    from ..server._registry import ModelRegistry
    from ..server._replay import StreamBuffers
    from ..server._state import ServerState
    from ..store import open_server_store

    config = load_config({"db": db, "config": config_file})
    store = await open_server_store(config.db)
    registry = ModelRegistry(config)
    state: ServerState | None = None
    try:
        state = ServerState(
            config=config,
            store=store,
            registry=registry,
            locks=ConversationLocks(store.leases, ttl=config.lease_ttl, queue=config.queue_turns),
            views=ViewCache(store),
            metrics=Metrics(),
            streams=StreamBuffers(),
            keys_required=await store.keys.active() > 0,
        )
        yield state
    finally:
        if state is not None:
            await state.compactor.drain()
        await registry.close()
        await store.close()


async def conversation(store: ServerStore, conversation_id: str) -> ConversationInfo:
    """The conversation's record; an unknown id says where the ids are."""
    from .._errors import NotFoundError

    try:
        return await store.conversations.get(conversation_id)
    except NotFoundError:
        raise NotFoundError(
            f"no conversation {conversation_id!r} in this store; `contextfold conversations list` shows the ids"
        ) from None
