"""Stores: append-only conversation logs on SQLite (default) or PostgreSQL, behind one protocol."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._knowledge import (
    ChunkHit,
    FileCounts,
    FileRecord,
    Files,
    Index,
    Knowledge,
    VectorFile,
    VectorFiles,
    VectorStoreRecord,
    VectorStores,
)
from ._protocol import (
    Anchor,
    Anchors,
    ApiKey,
    Checkpoint,
    ConversationInfo,
    Conversations,
    Keys,
    Leases,
    ResponseRecord,
    Responses,
    SearchHit,
    ServerStore,
    Store,
    TurnAnchors,
)
from ._sqlite import SQLiteStore

if TYPE_CHECKING:
    from ._postgres import PostgresStore


async def open_store(location: str | Path) -> Store:
    """Open (and migrate) the store at a file path, ':memory:', or a `postgresql://` URL."""
    return await open_server_store(location)


async def open_server_store(location: str | Path) -> ServerStore:
    """`open_store`, typed with what the server keeps beside the logs: responses, API keys, leases, anchors."""
    text = str(location)
    if text.startswith(("postgresql://", "postgres://")):
        from ._postgres import PostgresStore

        return await PostgresStore.open(text)
    return await SQLiteStore.open(text)


def __getattr__(name: str) -> Any:
    # PostgresStore is imported on first use, so SQLite-only users never load the PostgreSQL driver.
    if name == "PostgresStore":
        from ._postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Anchor",
    "Anchors",
    "ApiKey",
    "Checkpoint",
    "ChunkHit",
    "ConversationInfo",
    "Conversations",
    "FileCounts",
    "FileRecord",
    "Files",
    "Index",
    "Keys",
    "Knowledge",
    "Leases",
    "PostgresStore",
    "ResponseRecord",
    "Responses",
    "SQLiteStore",
    "SearchHit",
    "ServerStore",
    "Store",
    "TurnAnchors",
    "VectorFile",
    "VectorFiles",
    "VectorStoreRecord",
    "VectorStores",
    "open_server_store",
    "open_store",
]
