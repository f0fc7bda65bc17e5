"""The storage seam: one small protocol, on SQLite and PostgreSQL, checked by one contract suite."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..events import AnyEvent, Compaction, Event


@dataclass(frozen=True, slots=True)
class ConversationInfo:
    id: str
    created_at: float
    head: int
    """Sequence number of the newest event (0 for an empty conversation)."""
    checkpoint: int
    """Sequence number of the newest compaction (0 when there is none)."""
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What a cold load needs: the newest compaction, the events it kept, its summary holder, what followed.

    Without any compaction, `compaction` is None and `after` is the whole log.
    """

    head: int
    compaction: Compaction | None
    kept: dict[int, AnyEvent]
    summary_holder: Compaction | None
    after: list[AnyEvent]


@dataclass(frozen=True, slots=True)
class SearchHit:
    seq: int
    event_id: str
    type: str
    snippet: str
    score: float
    """Higher is a better match."""


class Conversations(Protocol):
    async def create(
        self, conversation_id: str | None = None, metadata: dict[str, str] | None = None
    ) -> ConversationInfo: ...

    async def get(self, conversation_id: str) -> ConversationInfo: ...

    async def list(self, *, limit: int = 100, after: str | None = None) -> list[ConversationInfo]: ...

    async def delete(self, conversation_id: str) -> None: ...


class Store(Protocol):
    """A set of append-only conversation logs.

    `append` is a transaction: the events land together, numbered from `expected_head + 1`, or not at all; a
    stale `expected_head` raises `ConflictError`. A `Deletion` erases the content of its targets in the same
    transaction.
    """

    @property
    def conversations(self) -> Conversations: ...

    async def append(self, conversation_id: str, events: Sequence[Event], expected_head: int) -> list[AnyEvent]: ...

    async def read(
        self,
        conversation_id: str,
        *,
        after: int = 0,
        seqs: Iterable[int] | None = None,
        ids: Iterable[str] | None = None,
        limit: int | None = None,
    ) -> list[AnyEvent]: ...

    async def checkpoint(self, conversation_id: str) -> Checkpoint: ...

    async def search(
        self, conversation_id: str, query: str, *, limit: int = 10, offset: int = 0
    ) -> list[SearchHit]: ...

    async def close(self) -> None: ...
