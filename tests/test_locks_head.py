"""The turn lock takes the store's head with its lease, so a cached view at that head is used without a read."""

from __future__ import annotations

from typing import Any

from contextfold.events import user
from contextfold.server._locks import ConversationLocks, ViewCache
from contextfold.store import ServerStore

from .store_fixtures import Backend


def _count_reads(store: Any) -> list[int]:
    reads = [0]
    inner = store.read

    async def read(*args: Any, **kwargs: Any) -> Any:
        reads[0] += 1
        return await inner(*args, **kwargs)

    store.read = read
    return reads


async def test_a_cached_view_at_the_leased_head_needs_no_read_and_one_behind_catches_up(
    store: ServerStore, backend: Backend
) -> None:
    conv = await store.conversations.create()
    locks = ConversationLocks(store.leases, ttl=30, queue=True)
    views = ViewCache(store)
    views.locks = locks
    async with locks.hold(conv.id) as head:
        assert head == 0
        conversation = await views.current(conv.id, None)
        await conversation.append(user("one"))
    reads = _count_reads(store)
    async with locks.hold(conv.id) as head:
        assert head == 1
        assert (await views.current(conv.id, None)).head == 1
    assert reads[0] == 0
    second = await backend.open()  # another process writes under its own lease
    try:
        owner = "elsewhere"
        assert await second.leases.take(conv.id, owner, 30) == 1
        await second.commit_turn(conv.id, [user("two")], 1, release=owner)
    finally:
        await second.close()
    async with locks.hold(conv.id) as head:
        assert head == 2
        conversation = await views.current(conv.id, None)
        assert conversation.head == 2
        # the turn's commit gives the lease back, and the hold does not release it again
        conversation.stage()
        await conversation.append(user("three"))
        await conversation.flush(release=locks.owner(conv.id))
        locks.released(conv.id)
        assert await store.leases.take(conv.id, "next", 30) == 3  # free as soon as the commit landed
    assert reads[0] == 1
    await store.leases.release(conv.id, "next")
