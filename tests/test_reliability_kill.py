"""SIGKILL a real `contextfold serve` during 200 concurrent streaming turns, restart it, and check what survived:
every response a client saw complete is stored whole, no view shows half a turn, the crashed turns end up marked
interrupted, and every conversation takes a new turn. On SQLite (one process), and on PostgreSQL with two replicas
(one killed while the other keeps serving).

The turns stream from a slow fake upstream (`FaultyUpstream`: a few deltas, tens of ms apart), so most of them are
mid-answer when the kill lands. These two tests are marked `slow`. A quick in-process test builds by hand what a
crash leaves in the store, and checks that the first read of it recovers it (once no process holds its lease).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest

from contextfold._conversation import Conversation
from contextfold.events import Message, TurnMarker, new_id, text_of, user
from contextfold.store import PostgresStore, ResponseRecord, SQLiteStore, Store

from .fakes.faulty_upstream import FaultyUpstream
from .processes import Replica
from .reliability_fixtures import Seen, check_log, check_views, config_file, eventually, stream_turn
from .server_fixtures import Served, check_response

CONVERSATIONS = 200
LEASE_TTL = 2.0
"""A crashed process's conversations are free again after this (30 s by default; shortened for the test)."""


class Load:
    """One client per conversation, each streaming turn after turn until the server goes away."""

    def __init__(self, urls: Sequence[str], conversations: Sequence[str]) -> None:
        self.urls = urls
        self.conversations = conversations
        self.seen: dict[str, list[Seen]] = {c: [] for c in conversations}
        self.stopped = asyncio.Event()

    def in_flight(self) -> int:
        """Streams that have shown part of an answer and not its end."""
        return sum(
            1
            for turns in self.seen.values()
            if turns and turns[-1].final is None and turns[-1].error is None and len(turns[-1].events) > 2
        )

    def ready(self) -> bool:
        """Every client has had a turn acknowledged, and a quarter of them are mid-answer: time to kill."""
        warm = all(any(seen.acknowledged for seen in turns) for turns in self.seen.values())
        return warm and self.in_flight() >= len(self.conversations) // 4

    async def run(self) -> None:
        async with contextlib.AsyncExitStack() as exits:
            # A connection per request: a kept-alive one the server closes as it is reused would fail a POST that
            # never reached it, which a client cannot tell from one that did (and so could not retry).
            limits = httpx.Limits(max_connections=CONVERSATIONS * 2, max_keepalive_connections=0)
            clients = [
                await exits.enter_async_context(httpx.AsyncClient(base_url=url, timeout=60, limits=limits))
                for url in self.urls
            ]
            await asyncio.gather(
                *(self._client(clients[n % len(clients)], c) for n, c in enumerate(self.conversations))
            )

    def check_cut_by_the_kill(self) -> None:
        """Before the kill every turn was acknowledged; the kill cut the last stream of every client (a client of a
        surviving replica ends its turn and stops)."""
        for turns in self.seen.values():
            assert all(seen.acknowledged for seen in turns[:-1]), [seen.error for seen in turns if seen.error]

    async def _client(self, http: httpx.AsyncClient, conversation: str) -> None:
        n = 0
        while not self.stopped.is_set():
            seen = Seen(f"{conversation} turn {n}")
            self.seen[conversation].append(seen)
            await stream_turn(http, {"input": seen.input, "conversation": conversation}, seen)
            if seen.error is not None or not seen.acknowledged:
                return  # the server went away under this client
            n += 1


@pytest.mark.slow
async def test_sigkill_during_200_streaming_turns_on_sqlite(tmp_path: Path) -> None:
    db = str(tmp_path / "served.db")
    with FaultyUpstream(delay=0.25, pieces=8) as upstream:
        config = str(config_file(tmp_path, upstream, lease_ttl=LEASE_TTL))
        first = Replica(db, tmp_path / "first.log", "--config", config, "--queue-turns")
        try:
            first.wait_ready()
            conversations = await _create(first.url, CONVERSATIONS)
            load = Load([first.url], conversations)
            running = asyncio.create_task(load.run())
            # Kill once every client has had a turn acknowledged and most are mid-answer.
            await eventually(load.ready, "a turn acknowledged to every client, a quarter of them mid-answer", limit=180)
            first.process.kill()
            first.process.wait()
            load.stopped.set()
            await running
        finally:
            first.stop()
        load.check_cut_by_the_kill()

        store = await SQLiteStore.open(db)
        try:
            assert await _check_committed(store, load) >= CONVERSATIONS // 10, "the kill landed mid-turn"
        finally:
            await store.close()

        second = Replica(db, tmp_path / "second.log", "--config", config, "--queue-turns")
        try:
            second.wait_ready()
            # Until its lease lapses, a crashed turn cannot be told from one running elsewhere: it stays as it is.
            await asyncio.sleep(LEASE_TTL)
            await _check_after_restart(second.url, load)
            await _new_turns(second.url, conversations)
        finally:
            assert second.stop() == 0
        assert "Traceback" not in second.output()

    store = await SQLiteStore.open(db)
    try:
        await _check_recovered(store, load)
    finally:
        await store.close()


@pytest.mark.slow
async def test_sigkill_one_of_two_postgres_replicas_during_200_streaming_turns(pg_url: str, tmp_path: Path) -> None:
    with FaultyUpstream(delay=0.25, pieces=8) as upstream:
        config = str(config_file(tmp_path, upstream, lease_ttl=LEASE_TTL))
        doomed = Replica(pg_url, tmp_path / "doomed.log", "--config", config, "--queue-turns")
        survivor = Replica(pg_url, tmp_path / "survivor.log", "--config", config, "--queue-turns")
        try:
            doomed.wait_ready()
            survivor.wait_ready()
            conversations = await _create(doomed.url, CONVERSATIONS)
            load = Load([doomed.url, survivor.url], conversations)
            running = asyncio.create_task(load.run())
            await eventually(load.ready, "a turn acknowledged to every client, a quarter of them mid-answer", limit=180)
            doomed.process.kill()
            doomed.process.wait()
            load.stopped.set()  # the survivor's clients finish the turn they are in
            await running
            load.check_cut_by_the_kill()

            store = await PostgresStore.open(pg_url, max_size=2)
            try:
                assert await _check_committed(store, load) >= CONVERSATIONS // 20, "the kill landed mid-turn"
            finally:
                await store.close()
            # the survivor serves every conversation, the dead replica's too (once their leases lapse)
            await asyncio.sleep(LEASE_TTL)
            await _check_after_restart(survivor.url, load)
            await _new_turns(survivor.url, conversations)
            restarted = Replica(pg_url, tmp_path / "restarted.log", "--config", config, "--queue-turns")
            try:
                restarted.wait_ready()
                await _new_turns(restarted.url, conversations)
            finally:
                assert restarted.stop() == 0
        finally:
            doomed.stop()
            assert survivor.stop() == 0
        assert "Traceback" not in survivor.output()

    store = await PostgresStore.open(pg_url, max_size=2)
    try:
        await _check_recovered(store, load, new_turns=2)
    finally:
        await store.close()


async def test_what_a_crash_left_is_recovered_by_the_first_read_once_its_lease_lapsed(served: Served) -> None:
    conversation = (await served.post("/v1/conversations", json={}))["id"]
    await served.respond(input="before the crash", conversation=conversation)
    # What a process killed mid-turn leaves: its streamed response stored in progress, the turn started with its
    # input and no end, and its lease (here still live: the process might be running elsewhere).
    crashed = await Conversation.load(served.store, conversation)
    first = crashed.head + 1
    await crashed.append(TurnMarker(status="started", turn_id="turn_dead"), user("half a turn", turn_id="turn_dead"))
    record = ResponseRecord(
        new_id("resp"), "default", conversation, time.time(), "in_progress", first, 0, None, {"model": "test"}
    )
    await served.store.responses.put(record)
    assert await served.store.leases.acquire(conversation, "lease_elsewhere", 60.0)

    # while the lease holds, the turn may be running on another replica: reads show it as it is
    assert (await served.get(f"/v1/responses/{record.id}"))["status"] == "in_progress"
    await served.store.leases.release(conversation, "lease_elsewhere")  # it lapsed

    # the first read marks it: the response failed, the turn interrupted, no view shows any of it
    failed = await served.get(f"/v1/responses/{record.id}")
    assert failed["status"] == "failed"
    assert failed["output"] == []
    assert "server stopped" in failed["error"]["message"]
    items = await served.get(f"/v1/conversations/{conversation}/items", order="asc")
    assert "half a turn" not in json.dumps(items)
    status = check_log(await served.store.read(conversation))
    assert list(status.values()) == ["completed", "interrupted"]
    await check_views(served.store, conversation)
    # and the conversation goes on, from the failed response too
    answer = await served.respond(input="after the crash", previous_response_id=record.id)
    assert 'You said: "after the crash"' in answer["output"][0]["content"][0]["text"]
    assert "I saw 3 items" in answer["output"][0]["content"][0]["text"]  # before the crash, its answer, this


# --- steps --------------------------------------------------------------------------------------------------------


async def _create(url: str, count: int) -> list[str]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        replies = await asyncio.gather(*(http.post("/v1/conversations", json={}) for _ in range(count)))
    return [reply.json()["id"] for reply in replies]


async def _check_committed(store: Store, load: Load) -> int:
    """Straight from the store after the kill: every acknowledged turn is there, whole, once; nothing else of any
    turn but what a crash leaves (the one open turn at the end of a log, with its input). Returns how many turns
    the kill left open."""
    left_open = 0
    for conversation, turns in load.seen.items():
        events = await store.read(conversation)
        status = check_log(events)
        stored = [e for e in events if isinstance(e, Message)]
        by_id = {e.id: e for e in stored}
        for seen in turns:
            if not seen.acknowledged:
                continue
            assert seen.final is not None
            for item in seen.final["output"]:
                kept = by_id.get(item["id"])
                assert kept is not None, f"acknowledged item {item['id']} of {conversation} is lost"
                assert text_of(kept) == item["content"][0]["text"]
                assert status[kept.turn_id or ""] == "completed"
        inputs = [text_of(e) for e in stored if e.role == "user"]
        assert len(inputs) == len(set(inputs)), f"an input stored twice in {conversation}"
        acknowledged = [seen.input for seen in turns if seen.acknowledged]
        assert inputs[: len(acknowledged)] == acknowledged
        assert list(status.values()).count("open") <= 1
        assert all(s in ("completed", "open") for s in status.values()), status
        left_open += "open" in status.values()
    return left_open


async def _check_after_restart(url: str, load: Load) -> None:
    """Through the API of a (re)started server, before any new turn: acknowledged responses are retrievable as
    they were streamed, and the items list shows no half turn."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        for conversation, turns in load.seen.items():
            for seen in turns:
                if seen.acknowledged and seen.response_id is not None:
                    reply = await http.get(f"/v1/responses/{seen.response_id}")
                    assert reply.status_code == 200, reply.text
                    got = check_response(reply.json())
                    assert got.status == "completed"
                    assert seen.final is not None
                    assert [i.id for i in got.output] == [i["id"] for i in seen.final["output"]]
                elif seen.response_id is not None:  # the crashed stream's response: not left in progress forever
                    reply = await http.get(f"/v1/responses/{seen.response_id}")
                    if reply.status_code == 200:
                        assert reply.json()["status"] in ("completed", "cancelled", "failed"), reply.json()
            reply = await http.get(f"/v1/conversations/{conversation}/items", params={"order": "asc", "limit": 100})
            assert reply.status_code == 200, reply.text
            listed = [i for i in reply.json()["data"] if i["type"] == "message"]
            users = [i["content"][0]["text"] for i in listed if i["role"] == "user"]
            acknowledged = [seen.input for seen in turns if seen.acknowledged]
            # a turn that committed its answer before the kill (but the client never saw its end) counts whole
            assert users[: len(acknowledged)] == acknowledged
            assert len(users) - len(acknowledged) <= 1
            assistants = [i for i in listed if i["role"] == "assistant"]
            assert len(assistants) == len(users), f"half a turn listed in {conversation}: {users[-1]!r} unanswered"


async def _new_turns(url: str, conversations: Sequence[str]) -> None:
    """A new turn on every conversation at once; each is answered (a crashed conversation once its lease lapsed)."""
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=50)) as http:

        async def turn(conversation: str) -> None:
            body = {"input": f"{conversation} after the crash", "conversation": conversation}
            reply = await http.post("/v1/responses", json=body)
            assert reply.status_code == 200, reply.text
            answer = check_response(reply.json())
            assert answer.status == "completed"
            assert "after the crash" in answer.output_text

        await asyncio.gather(*(turn(c) for c in conversations))


async def _check_recovered(store: Store, load: Load, *, new_turns: int = 1) -> None:
    """After the new turns: every crashed turn is marked interrupted, no view holds any of it, nothing is lost."""
    for conversation, turns in load.seen.items():
        events = await store.read(conversation)
        status = check_log(events)
        assert "open" not in status.values()
        assert set(status.values()) <= {"completed", "interrupted"}
        assert list(status.values())[-new_turns:] == ["completed"] * new_turns
        conversation_now = await check_views(store, conversation)
        in_view = {item.turn_id for item in conversation_now.view.items.values()}
        assert not {t for t, s in status.items() if s == "interrupted"} & in_view
        acknowledged = [seen.input for seen in turns if seen.acknowledged]
        inputs = [text_of(e) for e in events if isinstance(e, Message) and e.role == "user"]
        assert inputs[: len(acknowledged)] == acknowledged
        markers = [e for e in events if isinstance(e, TurnMarker) and e.status == "interrupted"]
        assert len(markers) <= 1
