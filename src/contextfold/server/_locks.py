"""Per-conversation turn ordering, within one process and across replicas, and the view cache it protects.

A turn (or any change to a conversation's log) runs while holding its conversation: first an in-process asyncio
lock, so this process's own waiters queue in order without touching the database, then a lease row in the store,
so two processes (two server replicas on one PostgreSQL, or the CLI beside a server on one SQLite file) never run
turns on one conversation at once. The lease is renewed while the turn runs and lapses on its own if the process
dies, so a crash frees the conversation after `ttl` seconds. The store's expected-head check still backs all of it:
a writer that lost its lease gets a conflict, never an interleaved log.

Views are cached per conversation, keyed by the head they were built at. Taking the lease reads the store's head in
the same round trip (`Leases.take`): a cached view at that head is current and costs no read at all; one behind it
(another replica or the CLI wrote) is brought up by reading only the events after it, so a turn costs O(new
events), never a reload. Turns a crash left open are marked interrupted (and their stored responses failed) the first
time the conversation is held again, or read while nobody holds it: no read shows half a turn once its lease has
lapsed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from .._conversation import Conversation
from .._errors import BusyError, StoreError
from ..events import new_id
from ..store import Leases, ServerStore

log = logging.getLogger("contextfold.server")

_MAX_WAIT = 300.0
"""How long a queued turn waits for its conversation before giving up with 409."""
CRASHED = "the server stopped before the response was complete"


@dataclass(slots=True)
class _Local:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0
    brief: bool = False
    """Held by a background compaction's commit (one append): a turn waits for it instead of answering 409."""


class ConversationLocks:
    def __init__(self, leases: Leases, *, ttl: float, queue: bool) -> None:
        self.leases = leases
        self.ttl = ttl
        self.queue = queue
        self._local: dict[str, _Local] = {}
        self._unreleased: dict[str, str] = {}  # conversation -> the owner of a lease whose release failed
        self._heads: dict[str, int] = {}  # conversation -> the store's head when this process took its lease
        self._owners: dict[str, str] = {}  # conversation -> the owner of the lease this process holds
        self._released: set[str] = set()  # held conversations whose lease a commit gave back already
        self._kept: set[str] = set()  # held conversations whose commit could not reach the store

    def owner(self, conversation_id: str) -> str | None:
        """The owner of the lease this process holds on the conversation: pass it as `commit_turn(release=...)`,
        then call `released` so the hold does not give it back a second time."""
        return self._owners.get(conversation_id)

    def released(self, conversation_id: str) -> None:
        """The turn's commit released the lease: the hold ends without another round trip."""
        if conversation_id in self._owners:
            self._released.add(conversation_id)

    def unreachable(self, conversation_id: str) -> None:
        """The turn's commit (and the release in it) could not reach the store: the hold does not try the release
        again (in an outage it would wait as long, and hold back the client's error); the lease is kept as one
        whose release failed: it lapses on its own for other processes, and this one takes it up again at once."""
        if conversation_id in self._owners:
            self._kept.add(conversation_id)

    def head_seen(self, conversation_id: str) -> int | None:
        """The store's head as the lease held now was taken, once per hold: None when this process does not hold
        the conversation or it was asked already (the holder's own writes move the head past it from then on)."""
        return self._heads.pop(conversation_id, None)

    async def drained(self, limit: float) -> bool:
        """Wait, at most `limit` seconds, until this process holds no conversation: on shutdown, the turns just
        cancelled wind up (marked interrupted, leases given back) before the store closes under them."""
        waited = 0.0
        while self._local and waited < limit:
            await asyncio.sleep(0.02)
            waited += 0.02
        return not self._local

    def busy(self, conversation_id: str) -> bool:
        """Whether this process is running a turn on the conversation."""
        local = self._local.get(conversation_id)
        return local is not None and local.lock.locked()

    @contextlib.asynccontextmanager
    async def hold(self, conversation_id: str, *, queue: bool | None = None, brief: bool = False) -> AsyncIterator[int]:
        """Hold the conversation; yields the store's head as the lease was taken. `brief`: the holder only commits
        a background compaction; a turn arriving meanwhile waits for it."""
        wait = self.queue if queue is None else queue
        local = self._local.setdefault(conversation_id, _Local())
        if local.lock.locked() and not wait and not local.brief:
            raise _busy(conversation_id)
        local.users += 1
        try:
            async with local.lock:
                local.brief = brief
                # a lease this process could not give back (the store was down) is still ours: take it up again
                owner = self._unreleased.pop(conversation_id, None) or new_id("lease")
                head = await self._acquire(conversation_id, owner, wait)
                self._heads[conversation_id] = head
                self._owners[conversation_id] = owner
                done = asyncio.Event()
                renewer = asyncio.create_task(
                    self._renew(conversation_id, owner, done), name=f"lease {conversation_id}"
                )
                try:
                    yield head
                finally:
                    # `brief` stays as it is until the lock is free (the next holder sets its own): a turn arriving
                    # while a compaction's commit gives its lease back waits for it rather than answering 409
                    self._heads.pop(conversation_id, None)
                    done.set()
                    renewer.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await renewer
                    self._owners.pop(conversation_id, None)
                    if conversation_id in self._released:
                        self._released.discard(conversation_id)
                    elif conversation_id in self._kept:
                        self._kept.discard(conversation_id)
                        self._unreleased[conversation_id] = owner
                    else:  # shielded: a cancelled turn must still give its conversation back at once
                        await asyncio.shield(self._release(conversation_id, owner))
        finally:
            local.users -= 1
            if local.users == 0:
                self._local.pop(conversation_id, None)

    async def _acquire(self, conversation_id: str, owner: str, wait: bool) -> int:
        delay, waited = 0.005, 0.0
        while (head := await self.leases.take(conversation_id, owner, self.ttl)) is None:
            if not wait or waited >= _MAX_WAIT:
                raise _busy(conversation_id)
            await asyncio.sleep(delay)
            waited += delay
            delay = min(delay * 2, 0.25)
        return head

    async def _renew(self, conversation_id: str, owner: str, done: asyncio.Event) -> None:
        """Renew the lease every third of its TTL until `done`, riding out store failures (the next renewal may
        succeed before the lease lapses). It stops on `done` as well as on cancellation: a cancellation can be
        lost (Python 3.11's `wait_for`, which the PostgreSQL pool waits for a connection with, drops one that
        lands as the wait ends), and a renewer that missed it would hold the conversation for ever."""
        while not done.is_set():
            await asyncio.sleep(self.ttl / 3)
            if done.is_set():
                return
            try:
                renewed = await self.leases.renew(conversation_id, owner, self.ttl)
            except StoreError as error:
                log.warning("could not renew the turn lease of %s, retrying: %s", conversation_id, error)
                continue
            if not renewed:
                log.error("lost the turn lease of %s; the store's head check guards its log", conversation_id)
                return

    async def _release(self, conversation_id: str, owner: str) -> None:
        """Give the conversation back. If the store cannot be reached, the lease lapses on its own after its TTL
        for other processes, and this one takes it up again at once (it is still its owner)."""
        try:
            await self.leases.release(conversation_id, owner)
        except StoreError as error:
            log.warning("could not release the turn lease of %s (it lapses on its own): %s", conversation_id, error)
            self._unreleased[conversation_id] = owner


def _busy(conversation_id: str) -> BusyError:
    return BusyError(
        f"conversation {conversation_id!r} is running another turn; retry when it ends "
        "(or start the server with --queue-turns to wait for it)"
    )


class ViewCache:
    """Conversations with their views, most recently used kept, at most `capacity`."""

    def __init__(self, store: ServerStore, capacity: int = 1_024, *, locks: ConversationLocks | None = None) -> None:
        self.store = store
        self.capacity = capacity
        self.locks = locks
        """The same process's locks: with them, reads recover what a crash left open (holding the conversation)."""
        self._cached: OrderedDict[str, Conversation] = OrderedDict()

    async def current(self, conversation_id: str, model: str | None) -> Conversation:
        """The conversation at the store's head. Call it holding the conversation (see `ConversationLocks`)."""
        conversation = self._cached.pop(conversation_id, None)
        seen = self.locks.head_seen(conversation_id) if self.locks is not None else None
        if conversation is not None and (conversation.stale or (seen is not None and conversation.head > seen)):
            # ahead of the store: a flush failed and could not rebuild it, or the conversation was made again
            conversation = None
        if conversation is None:
            conversation = await Conversation.load(self.store, conversation_id, model=model)
        elif seen is None or conversation.head < seen:
            await conversation.refresh()  # behind: another process wrote (or we hold no lease: ask the store)
        conversation.model = model
        if conversation.view.open_turns:  # no turn can be running: we hold the conversation
            await conversation.recover()
            # A stored response ends with the marker: continuing from it continues this log (a fork cut inside
            # the open turn would keep its half as completed).
            await self._fail_responses(conversation_id, conversation.head)
        self.put(conversation)
        return conversation

    async def _fail_responses(self, conversation_id: str, head: int) -> None:
        """Stored responses a crash left `in_progress` (none can be running: we hold the conversation) fail."""
        for record in await self.store.responses.for_conversation(conversation_id, limit=10):
            if record.status == "in_progress":
                data = {
                    **record.data,
                    "completed_at": time.time(),
                    "error": {"code": "server_error", "message": CRASHED},
                }
                await self.store.responses.put(dataclasses.replace(record, status="failed", last_seq=head, data=data))

    async def peek(self, conversation_id: str) -> Conversation:
        """The conversation for reading, without holding it: the cached one when it is at the store's head, else a
        fresh load. It never changes a cached view, which a running turn may be appending to. A turn open in the
        log while nobody holds the conversation was left by a crash: it is marked interrupted first (`settle`)."""
        conversation = await self._at_head(conversation_id)
        if conversation.view.open_turns and await self.settle(conversation_id):
            conversation = await self._at_head(conversation_id)
        return conversation

    async def _at_head(self, conversation_id: str) -> Conversation:
        info = await self.store.conversations.get(conversation_id)
        conversation = self._cached.get(conversation_id)
        if conversation is not None and conversation.view.head == info.head:
            return conversation
        return await Conversation.load(self.store, conversation_id)

    async def settle(self, conversation_id: str) -> bool:
        """Mark the turns a crash left open as interrupted, if no process holds the conversation (its lease lapsed);
        returns whether it could look. A turn running here or on another replica holds it, and is left alone."""
        if self.locks is None or self.locks.busy(conversation_id):
            return False
        try:
            async with self.locks.hold(conversation_id, queue=False):
                cached = self._cached.get(conversation_id)
                conversation = await self.current(conversation_id, cached.model if cached else None)
                # a crash between storing a streamed response and starting its turn leaves only the response
                await self._fail_responses(conversation_id, conversation.head)
        except BusyError:
            return False
        return True

    def put(self, conversation: Conversation) -> None:
        self._cached[conversation.id] = conversation
        self._cached.move_to_end(conversation.id)
        while len(self._cached) > self.capacity:
            self._cached.popitem(last=False)

    def tenant(self, conversation_id: str) -> str | None:
        """The tenant of a cached conversation (None: not cached), without asking the store: a conversation's
        tenant never changes, and a holder learns that it was deleted meanwhile from the lease's take."""
        conversation = self._cached.get(conversation_id)
        return conversation.info.tenant if conversation is not None else None

    def forget(self, conversation_id: str) -> None:
        self._cached.pop(conversation_id, None)
