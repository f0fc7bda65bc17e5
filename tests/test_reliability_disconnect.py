"""Clients that hang up mid-answer: the turn is marked interrupted (or, when the answer was already stored, stays
completed), nothing is left behind (no task, no connection to the upstream, no socket, no pooled database
connection), and the conversation's next turn is answered without the interrupted one.

The app is served by uvicorn on a real loopback socket in the test's own event loop, so a closed connection is a
real disconnect and the test can look at every task the server runs. The model streams slowly (`FaultyUpstream`),
so the client is mid-answer when it leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from contextfold.server import ServerConfig, create_app
from contextfold.store import PostgresStore, ServerStore, open_server_store

from .fakes.faulty_upstream import MODEL, FaultyUpstream
from .reliability_fixtures import (
    CONVERSATION_HEADER,
    RouteClient,
    check_log,
    check_views,
    eventually,
    live,
    open_sockets,
    route,
)

STREAMS = ("responses-stream", "chat-stream", "messages-stream")
_FIRST_DELTA = {
    "responses-stream": "response.output_text.delta",
    "chat-stream": "content",
    "messages-stream": "content_block_delta",
}


@contextlib.asynccontextmanager
async def running(db: str) -> AsyncIterator[tuple[str, ServerStore, FaultyUpstream]]:
    """The app on a loopback port, its `faulty` model streaming 8 deltas 0.15 s apart; yields the URL, the store
    the app uses (opened here, so the test can look at its pool), and the upstream."""
    with FaultyUpstream(delay=0.15, pieces=8) as upstream:
        config = ServerConfig(db=db, routes=(route(upstream),))
        store = await open_server_store(db)
        try:
            async with live(create_app(config, store=store)) as url:
                yield url, store, upstream
        finally:
            await store.close()


def _backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(tmp_path / "s.db") if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _backend(request, tmp_path)


@pytest.mark.parametrize("way", STREAMS)
async def test_a_client_leaving_mid_stream_interrupts_its_turn_and_leaks_nothing(db: str, way: str) -> None:
    async with running(db) as (url, store, upstream), httpx.AsyncClient(base_url=url, timeout=30) as http:
        client = RouteClient(http, way)
        conversation = await client.start()  # warm: the upstream client's pool and the store's are in use
        baseline = _snapshot(store)
        assert _settled(store, baseline), baseline

        body, path = _request(client, "an answer I will not wait for")
        async with http.stream("POST", path, json=body, headers=_named(client)) as reply:
            assert reply.status_code == 200
            assert reply.headers.get(CONVERSATION_HEADER, conversation) == conversation
            async for line in reply.aiter_lines():
                if _FIRST_DELTA[way] in line:
                    break  # leave mid-answer: closing the stream unread closes the connection
        await eventually(lambda: upstream.active == 0, "the server letting go of the upstream's stream")
        assert upstream.hung_up == 1, "the upstream saw its reader go away mid-answer"

        events = await store.read(conversation)
        status = check_log(events)
        assert list(status.values())[-1] == "interrupted", status
        await eventually(lambda: _settled(store, baseline), f"nothing left behind: {baseline} -> {_snapshot(store)}")

        # the next turn is answered, and the model never sees the interrupted one
        if not way.startswith("responses"):
            client.history.pop()  # the message the client gave up on
        outcome = await client.turn("and now?")
        assert outcome.text == "answer to and now?", outcome
        (sent,) = [c for c in upstream.model_calls() if c.text == "and now?"]
        assert "an answer I will not wait for" not in json.dumps(sent.body["messages"])
        check_log(await store.read(conversation))
        await check_views(store, conversation)
        await eventually(lambda: _settled(store, baseline), "nothing left behind after the next turn")


@pytest.mark.parametrize("way", ["responses", "chat", "messages"])
async def test_a_client_leaving_a_non_streamed_turn_ends_it(tmp_path: Path, way: str) -> None:
    """A non-streamed request has nothing to send until the end, so the server listens for the client leaving: the
    turn is cancelled (marked interrupted), its upstream connection closed, and its conversation free at once for
    the next turn (issue 14, item 7; it used to run on, holding the conversation, for an answer nobody reads)."""
    async with running(str(tmp_path / "s.db")) as (url, store, upstream):
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            client = RouteClient(http, way)
            conversation = await client.start()
            baseline = _snapshot(store)
        async with httpx.AsyncClient(base_url=url, timeout=0.3) as impatient:
            left = RouteClient(impatient, way)
            left.conversation, left.history = client.conversation, list(client.history)
            with pytest.raises(httpx.ReadTimeout):
                await left.turn("a slow answer")
        await eventually(lambda: upstream.hung_up == 1, "the upstream's answer abandoned mid-way")
        await eventually(lambda: upstream.active == 0, "no connection to the upstream left open")
        await eventually(lambda: _settled(store, baseline), "nothing left behind")
        events = await store.read(conversation)
        assert list(check_log(events).values()) == ["completed", "interrupted"]
        await check_views(store, conversation)
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            client.http = http
            assert (await client.turn("and now?")).text is not None  # no 409: the conversation was given back
        assert list(check_log(await store.read(conversation)).values())[-1] == "completed"


async def test_many_clients_leaving_at_once_leave_nothing_behind(tmp_path: Path) -> None:
    """Thirty streams on thirty conversations, every client leaving after its first delta."""
    async with running(str(tmp_path / "s.db")) as (url, store, upstream):
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
            clients = [RouteClient(http, STREAMS[n % 3]) for n in range(30)]
            conversations = await asyncio.gather(*(c.start() for c in clients))
            baseline = _snapshot(store)

            async def leave(client: RouteClient) -> None:
                body, path = _request(client, "left behind")
                async with http.stream("POST", path, json=body, headers=_named(client)) as reply:
                    async for line in reply.aiter_lines():
                        if _FIRST_DELTA[client.route] in line:
                            break

            await asyncio.gather(*(leave(c) for c in clients))
            await eventually(lambda: upstream.active == 0, "every upstream stream let go")
            await eventually(lambda: _settled(store, baseline), f"nothing left: {baseline} -> {_snapshot(store)}")
            for conversation in conversations:
                assert list(check_log(await store.read(conversation)).values())[-1] == "interrupted"
                await check_views(store, conversation)


def _request(client: RouteClient, text: str) -> tuple[dict[str, Any], str]:
    """The streamed request `client` would send for `text` (its history kept as the client keeps it)."""
    if client.route.startswith("responses"):
        return {"model": MODEL, "input": text, "conversation": client.conversation, "stream": True}, "/v1/responses"
    client.history.append({"role": "user", "content": text})
    if client.route.startswith("chat"):
        return {"model": MODEL, "messages": client.history, "stream": True}, "/v1/chat/completions"
    return {"model": MODEL, "max_tokens": 512, "messages": client.history, "stream": True}, "/v1/messages"


def _named(client: RouteClient) -> dict[str, str]:
    return {CONVERSATION_HEADER: client.conversation} if client.conversation else {}


def _snapshot(store: ServerStore) -> tuple[tuple[str, ...], int, int]:
    """What a finished turn must have given back: every task running in the loop (the server's and the test's,
    by coroutine), this process's open sockets, and the database connections checked out of the pool."""
    tasks = sorted(_name(t) for t in asyncio.all_tasks() if not t.done())
    busy = 0
    if isinstance(store, PostgresStore):
        stats = store._pool.get_stats()
        busy = stats.get("pool_size", 0) - stats.get("pool_available", 0)
    return tuple(tasks), open_sockets(), busy


def _settled(store: ServerStore, baseline: tuple[tuple[str, ...], int, int]) -> bool:
    """No task of a turn left (its run, its wind-up, its lease renewal), the same other tasks as before, no more
    sockets (a connection the client closed may be gone), no database connection checked out."""
    tasks, sockets, busy = _snapshot(store)
    turns = [t for t in tasks if t.split(".")[-1] in ("_drive", "_wind_up", "_renew")]
    return not turns and tasks == baseline[0] and sockets <= baseline[1] and busy == 0


def _name(task: asyncio.Task[Any]) -> str:
    coro = task.get_coro()
    return getattr(coro, "__qualname__", None) or task.get_name()
