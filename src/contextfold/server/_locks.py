"""Per-conversation turn ordering, within one process and across replicas, and the view cache it protects.

A turn (or any change to a conversation's log) runs while holding its conversation: first an in-process asyncio
lock, so this process's own waiters queue in order without touching the database, then a lease row in the store,
so two processes (two server replicas on one PostgreSQL, or the CLI beside a server on one SQLite file) never run
turns on one conversation at once. The lease is renewed while the turn runs and lapses on its own if the process
dies, so a crash frees the conversation after `ttl` seconds. The store's expected-head check still backs all of it:
a writer that lost its lease gets a conflict, never an interleaved log.

Views are cached per conversation, keyed by the head they were built at: under the lease a cached view is
brought up to the store's head by reading only the events after it (usually none), so a turn costs O(new events),
not a reload. Turns a crash left open are marked interrupted the first time the conversation is held again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from .._conversation import Conversation
from .._errors import BusyError
from ..events import new_id
from ..store import Leases, Store

log = logging.getLogger("contextfold.server")

_MAX_WAIT = 300.0
"""How long a queued turn waits for its conversation before giving up with 409."""


@dataclass(slots=True)
class _Local:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class ConversationLocks:
    def __init__(self, leases: Leases, *, ttl: float, queue: bool) -> None:
        self.leases = leases
        self.ttl = ttl
        self.queue = queue
        self._local: dict[str, _Local] = {}

    def busy(self, conversation_id: str) -> bool:
        """Whether this process is running a turn on the conversation."""
        local = self._local.get(conversation_id)
        return local is not None and local.lock.locked()

    @contextlib.asynccontextmanager
    async def hold(self, conversation_id: str, *, queue: bool | None = None) -> AsyncIterator[None]:
        wait = self.queue if queue is None else queue
        local = self._local.setdefault(conversation_id, _Local())
        if local.lock.locked() and not wait:
            raise _busy(conversation_id)
        local.users += 1
        try:
            async with local.lock:
                owner = new_id("lease")
                await self._acquire(conversation_id, owner, wait)
                renewer = asyncio.create_task(self._renew(conversation_id, owner), name=f"lease {conversation_id}")
                try:
                    yield
                finally:
                    renewer.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await renewer
                    # Shielded: a cancelled turn must still give its conversation back at once.
                    await asyncio.shield(self.leases.release(conversation_id, owner))
        finally:
            local.users -= 1
            if local.users == 0:
                self._local.pop(conversation_id, None)

    async def _acquire(self, conversation_id: str, owner: str, wait: bool) -> None:
        delay, waited = 0.005, 0.0
        while not await self.leases.acquire(conversation_id, owner, self.ttl):
            if not wait or waited >= _MAX_WAIT:
                raise _busy(conversation_id)
            await asyncio.sleep(delay)
            waited += delay
            delay = min(delay * 2, 0.25)

    async def _renew(self, conversation_id: str, owner: str) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            if not await self.leases.renew(conversation_id, owner, self.ttl):
                log.error("lost the turn lease of %s; the store's head check guards its log", conversation_id)
                return


def _busy(conversation_id: str) -> BusyError:
    return BusyError(
        f"conversation {conversation_id!r} is running another turn; retry when it ends "
        "(or start the server with --queue-turns to wait for it)"
    )


class ViewCache:
    """Conversations with their views, most recently used kept, at most `capacity`."""

    def __init__(self, store: Store, capacity: int = 1_024) -> None:
        self.store = store
        self.capacity = capacity
        self._cached: OrderedDict[str, Conversation] = OrderedDict()

    async def current(self, conversation_id: str, model: str | None) -> Conversation:
        """The conversation at the store's head. Call it holding the conversation (see `ConversationLocks`)."""
        conversation = self._cached.pop(conversation_id, None)
        if conversation is None:
            conversation = await Conversation.load(self.store, conversation_id, model=model)
        else:
            await conversation.refresh()
        conversation.model = model
        if conversation.view.open_turns:  # no turn can be running: we hold the conversation
            await conversation.recover()
        self.put(conversation)
        return conversation

    async def peek(self, conversation_id: str) -> Conversation:
        """The conversation for reading, without holding it: the cached one when it is at the store's head, else a
        fresh load. It never changes a cached view, which a running turn may be appending to."""
        info = await self.store.conversations.get(conversation_id)
        conversation = self._cached.get(conversation_id)
        if conversation is not None and conversation.view.head == info.head:
            return conversation
        return await Conversation.load(self.store, conversation_id)

    def put(self, conversation: Conversation) -> None:
        self._cached[conversation.id] = conversation
        self._cached.move_to_end(conversation.id)
        while len(self._cached) > self.capacity:
            self._cached.popitem(last=False)

    def forget(self, conversation_id: str) -> None:
        self._cached.pop(conversation_id, None)
