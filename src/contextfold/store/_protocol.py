"""The storage seam: one small protocol, on SQLite and PostgreSQL, checked by one contract suite."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ..events import AnyEvent, Compaction, Event
from ._knowledge import Knowledge


@dataclass(frozen=True, slots=True)
class ConversationInfo:
    id: str
    created_at: float
    head: int
    """Sequence number of the newest event (0 for an empty conversation)."""
    checkpoint: int
    """Sequence number of the newest compaction (0 when there is none)."""
    metadata: dict[str, str] = field(default_factory=dict)
    tenant: str = ""
    """Who owns the conversation on a multi-tenant server ('' when there are no tenants)."""


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
        self, conversation_id: str | None = None, metadata: dict[str, str] | None = None, *, tenant: str = ""
    ) -> ConversationInfo: ...

    async def get(self, conversation_id: str) -> ConversationInfo: ...

    async def list(
        self,
        *,
        limit: int = 100,
        after: str | None = None,
        tenant: str | None = None,
        order: Literal["asc", "desc"] = "asc",
    ) -> list[ConversationInfo]:
        """A page ordered by (created_at, id) in `order`, starting after the conversation `after`.

        `tenant` None lists every tenant's conversations; a string lists only that tenant's (and `after` must be
        one of them).
        """
        ...

    async def update(self, conversation_id: str, metadata: dict[str, str]) -> ConversationInfo:
        """Replace the metadata."""
        ...

    async def delete(self, conversation_id: str) -> None:
        """Delete the conversation and everything recorded about it: events, responses, its turn lease, anchors."""
        ...


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


# --- what the server keeps beside the logs ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResponseRecord:
    """A stored response. Its input and output are a range of its conversation's log, never a copy."""

    id: str
    tenant: str
    conversation_id: str
    created_at: float
    status: str
    """One of "in_progress", "completed", "incomplete", "failed", "cancelled"."""
    first_seq: int
    """First log event of this response's turn (0 if none yet)."""
    last_seq: int
    """Last log event of this response's turn (0 while in progress)."""
    previous_response_id: str | None
    data: dict[str, Any]
    """The response's own fields (model, instructions, params, usage, error, ...), stored as JSON."""


class Responses(Protocol):
    async def put(self, record: ResponseRecord) -> None:
        """Insert the record, or replace the one with its id."""
        ...

    async def get(self, response_id: str) -> ResponseRecord: ...

    async def delete(self, response_id: str) -> None: ...

    async def for_conversation(self, conversation_id: str, *, limit: int = 100) -> list[ResponseRecord]:
        """The conversation's responses, newest first."""
        ...


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key as stored: everything but the secret, of which only a hash is kept."""

    id: str
    """Public ("key_..."); names the key to revoke it."""
    tenant: str
    name: str
    prefix: str
    """The first 8 characters of the secret, to recognise it in a list."""
    created_at: float
    revoked_at: float | None = None


class Keys(Protocol):
    async def create(self, tenant: str, name: str = "") -> tuple[str, ApiKey]:
        """A new key for `tenant`: (the secret, shown only this once; the stored record)."""
        ...

    async def verify(self, secret: str) -> ApiKey | None:
        """The active key with this secret, or None for an unknown or revoked one."""
        ...

    async def list(self, *, tenant: str | None = None, include_revoked: bool = False) -> list[ApiKey]: ...

    async def revoke(self, key_id: str) -> ApiKey:
        """Revoke the key (revoking it again changes nothing) and return its record."""
        ...

    async def active(self) -> int:
        """How many unrevoked keys exist."""
        ...


class Leases(Protocol):
    """Per-conversation turn ordering across processes: one owner at a time, until it releases or its lease lapses.

    A lease expires `ttl` seconds after it was last acquired or renewed, so a crashed holder cannot block a
    conversation for longer than that.
    """

    async def acquire(self, conversation_id: str, owner: str, ttl: float) -> bool:
        """True if `owner` now holds the lease: there was none, it had expired, or `owner` already held it."""
        ...

    async def take(self, conversation_id: str, owner: str, ttl: float) -> int | None:
        """`acquire` and the conversation's head in one round trip: the head (read after the lease was won, so
        every write of an earlier holder is in it) when `owner` now holds the lease, None when another does."""
        ...

    async def renew(self, conversation_id: str, owner: str, ttl: float) -> bool:
        """Extend `owner`'s lease; False if it is no longer theirs (released, or expired and taken)."""
        ...

    async def release(self, conversation_id: str, owner: str) -> None:
        """Give the lease up; nothing happens unless `owner` holds it."""
        ...


@dataclass(frozen=True, slots=True)
class Anchor:
    """The proxy's note: when a client's history hashes to `key`, conversation `conversation_id` stood at `seq`."""

    key: str
    conversation_id: str
    seq: int
    created_at: float
    """When the anchor was last put (seconds since the epoch, on the database's clock)."""


class Anchors(Protocol):
    """How the proxy finds the stored conversation a client's resent history continues.

    Anchors belong to a tenant (their conversation's), go with their conversation when it is deleted, and are
    never copied to a fork.
    """

    async def put(self, conversation_id: str, seq: int, keys: Sequence[str]) -> None:
        """Record that `conversation_id` (its tenant is the conversation's) stood at `seq` for each key.

        A key already recorded for the same conversation is moved to the new seq (and time). Keys are 1 to 64
        printable characters, at most 10,000 per call; no keys is a no-op.
        """
        ...

    async def find(self, keys: Sequence[str], *, tenant: str) -> list[Anchor]:
        """Every anchor of `tenant`'s conversations whose key is one of `keys`, newest first.

        Ordered by created_at, then seq (both descending), then conversation id and key.
        """
        ...


class ServerStore(Store, Protocol):
    """A store with what the server keeps beside the logs: responses, API keys, turn leases and proxy anchors."""

    @property
    def responses(self) -> Responses: ...

    @property
    def keys(self) -> Keys: ...

    @property
    def leases(self) -> Leases: ...

    @property
    def anchors(self) -> Anchors: ...

    @property
    def knowledge(self) -> Knowledge:
        """Files, vector stores and their chunks (see `_knowledge`)."""
        ...

    @property
    def runs(self) -> Runs: ...

    async def commit_turn(
        self,
        conversation_id: str,
        events: Sequence[Event],
        expected_head: int,
        *,
        response: ResponseRecord | None = None,
        anchors: TurnAnchors | None = None,
        release: str | None = None,
    ) -> list[AnyEvent]:
        """A turn's writes in one transaction: `events` appended as `Store.append` would (numbered from
        `expected_head + 1`; a stale head raises `ConflictError`; none is a head check alone), `response` put,
        `anchors` put (`Anchors.put` of their seq and keys), and the lease of owner `release` given up. All of it
        lands, or (on any error) none of it."""
        ...


@dataclass(frozen=True, slots=True)
class TurnAnchors:
    """The anchors a turn puts as it commits: conversation at `seq` for each of `keys` (see `Anchors.put`)."""

    seq: int
    keys: Sequence[str]


class Runs(Protocol):
    """Background responses' stream events and cancel requests, shared by replicas (see `_runs`)."""

    async def add(self, response_id: str, frames: Sequence[tuple[int, str]]) -> None: ...

    async def after(self, response_id: str, seq: int, *, limit: int = 1_000) -> list[tuple[int, str]]: ...

    async def cancel(self, response_id: str) -> None: ...

    async def cancelled(self, response_ids: Sequence[str]) -> list[str]: ...
