"""Store round trips per request on the paths the store offers: before (one call per write) and after (the lease
with the head, keys from the cache, one commit per turn), then on the real server path (the app in process, the
`test` model): a Responses turn and a proxy request. Counts, not times: `python -m benchmarks.round_trips
[--db URL]`. A round trip is one hop to the SQLite worker thread or one pooled PostgreSQL connection borrowed."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from contextfold.events import TurnMarker, assistant, user
from contextfold.server._locks import ConversationLocks, ViewCache
from contextfold.store import ResponseRecord, ServerStore, open_server_store
from contextfold.store._sqlite import Worker


def _count(store: ServerStore) -> list[int]:
    counter = [0]
    if hasattr(store, "_pool"):
        inner = store._connection  # type: ignore[attr-defined]

        @contextlib.asynccontextmanager
        async def counted() -> AsyncIterator[Any]:
            counter[0] += 1
            async with inner() as conn:
                yield conn

        store._connection = counted  # type: ignore[attr-defined]
        parts: tuple[Any, ...] = (store.keys, store.leases, store.responses, store.anchors)
        for part in parts:
            part._connect = counted
    else:
        original: Callable[..., Awaitable[Any]] = Worker.run

        async def run(self: Worker, fn: Callable[..., Any], *args: Any) -> Any:
            counter[0] += 1
            return await original(self, fn, *args)

        Worker.run = run  # type: ignore[method-assign]
    return counter


class _OneByOne:
    """The leases as they were used before: acquire alone, so the view always catches up with a read."""

    def __init__(self, store: ServerStore) -> None:
        self._leases = store.leases

    async def take(self, conversation_id: str, owner: str, ttl: float) -> int | None:
        return 10**18 if await self._leases.acquire(conversation_id, owner, ttl) else None  # head unknown

    def __getattr__(self, name: str) -> Any:
        return getattr(self._leases, name)


async def _request(
    store: ServerStore, views: ViewCache, locks: ConversationLocks, secret: str, cid: str, new: bool
) -> None:
    if not new:
        store.keys._cache.changed()  # type: ignore[attr-defined]  # no key cache: a lookup per request
    assert await store.keys.verify(secret) is not None
    async with locks.hold(cid):
        conversation = await views.current(cid, None)
        turn = f"turn_{time.monotonic_ns()}"
        record = ResponseRecord(f"resp_{turn}", "acme", cid, time.time(), "in_progress", 0, 0, None, {})
        if new:
            conversation.stage()
        else:
            await store.responses.put(record)
        await conversation.append(TurnMarker(status="started", turn_id=turn), user("hi", turn_id=turn))
        await conversation.append(assistant("hello", turn_id=turn), TurnMarker(status="completed", turn_id=turn))
        done = ResponseRecord(record.id, "acme", cid, record.created_at, "completed", 1, conversation.head, None, {})
        if new:
            await conversation.flush(response=done, release=locks.owner(cid))
            locks.released(cid)
        else:
            await store.responses.put(done)


async def _server(store: ServerStore, counter: list[int], db: str, secret: str) -> None:
    """The server's own path: the requests as a client sends them, through the app and its lifespan."""
    import httpx

    from contextfold.server import ServerConfig, create_app

    app = create_app(ServerConfig(db=db), store=store)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"authorization": f"Bearer {secret}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", headers=headers) as http:
            conversation = (await http.post("/v1/conversations", json={})).json()["id"]
            messages: list[dict[str, str]] = []

            async def responses() -> None:
                body = {"model": "test", "input": "hi", "conversation": conversation}
                assert (await http.post("/v1/responses", json=body)).status_code == 200

            async def proxy() -> None:
                messages.append({"role": "user", "content": "hi"})
                body = {"model": "test", "messages": messages}
                reply = await http.post("/v1/chat/completions", json=body)
                assert reply.status_code == 200, reply.text
                messages.append({"role": "assistant", "content": reply.json()["choices"][0]["message"]["content"]})

            for label, request in (("server: a Responses turn", responses), ("server: a proxy request", proxy)):
                await request()  # warm
                counter[0] = 0
                for _ in range(10):
                    await request()
                print(f"{label:<42} {counter[0] / 10:.1f} round trips per request")


async def main(db: str) -> None:
    store = await open_server_store(db)
    secret, _ = await store.keys.create("acme")
    cid = (await store.conversations.create(tenant="acme")).id
    views = ViewCache(store)
    counter = _count(store)
    for label, new in (("before: one call per write", False), ("after: take + cached key + commit_turn", True)):
        locks = ConversationLocks(store.leases if new else _OneByOne(store), ttl=30, queue=True)
        views.locks = locks
        await _request(store, views, locks, secret, cid, new)  # warm: the view and the key cached
        counter[0] = 0
        for _ in range(10):
            await _request(store, views, locks, secret, cid, new)
        print(f"{label:<42} {counter[0] / 10:.1f} round trips per request")
    await _server(store, counter, db, secret)
    await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", help="a SQLite file or postgresql:// URL (default: a temporary SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main(args.db or str(Path(tmp) / "round_trips.db")))
