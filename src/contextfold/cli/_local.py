"""What the store-level commands share: the server's state, built in this process from `serve`'s configuration.

`contextfold conversations` answers with the server's own operations (`server/_operations.py`, the inspector's log
page), called directly rather than over HTTP, so no server needs to run. They need what the app's lifespan opens:
the configuration, the store, the model registry, the turn locks (leases in the store, so a command and a running
server never work on one conversation at once) and the view cache.
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

    Opened as the app's lifespan opens it (`server/_state.py`'s `open_state`), so the operations behave here as
    they do there; only the ingestion of queued files is left to the server.
    """
    from ..server._config import load_config
    from ..server._state import open_state

    async with open_state(load_config({"db": db, "config": config_file}), ingest=False) as state:
        yield state


async def conversation(store: ServerStore, conversation_id: str) -> ConversationInfo:
    """The conversation's record; an unknown id says where the ids are."""
    from .._errors import NotFoundError

    try:
        return await store.conversations.get(conversation_id)
    except NotFoundError:
        raise NotFoundError(
            f"no conversation {conversation_id!r} in this store; `contextfold conversations list` shows the ids"
        ) from None
