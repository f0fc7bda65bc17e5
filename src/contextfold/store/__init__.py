"""Stores: append-only conversation logs on SQLite (default) or PostgreSQL, behind one protocol."""

from __future__ import annotations

from pathlib import Path

from ._protocol import Checkpoint, ConversationInfo, Conversations, SearchHit, Store
from ._sqlite import SQLiteStore


async def open_store(location: str | Path) -> Store:
    """Open (and migrate) the store at a file path, ':memory:', or a `postgresql://` URL."""
    text = str(location)
    if text.startswith(("postgresql://", "postgres://")):
        from ._postgres import PostgresStore

        return await PostgresStore.open(text)
    return await SQLiteStore.open(text)


__all__ = [
    "Checkpoint",
    "ConversationInfo",
    "Conversations",
    "SQLiteStore",
    "SearchHit",
    "Store",
    "open_store",
]
