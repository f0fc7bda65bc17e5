"""`contextfold serve` as a real process on loopback: the SDK's sync and async clients (streaming too) against it,
a clean stop on SIGINT; and two replicas on one PostgreSQL taking turns on the same conversations at once, with no
turn lost or interleaved."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import openai
import pytest

from contextfold.events import AnyEvent, Message, TurnMarker, text_of
from contextfold.store import PostgresStore

from .processes import Replica
from .server_fixtures import check_response, check_stream, parse_sse


@contextlib.contextmanager
def replicas(db: str, tmp_path: Path, count: int, *flags: str) -> Iterator[list[Replica]]:
    started = [Replica(db, tmp_path / f"replica{n}.log", *flags) for n in range(count)]
    try:
        for replica in started:
            replica.wait_ready()
        yield started
    finally:
        for replica in started:
            replica.stop()


async def test_the_sdk_against_a_served_process(tmp_path: Path) -> None:
    with replicas(str(tmp_path / "served.db"), tmp_path, 1) as (replica,):
        with openai.OpenAI(base_url=f"{replica.url}/v1", api_key="unused", max_retries=0) as client:
            first = client.responses.create(model="test", input="my name is Ada")
            second = client.responses.create(model="test", input="who am I?", previous_response_id=first.id)
            assert 'You said: "who am I?"' in second.output_text
            assert "I saw 3 items" in second.output_text
            conversation = client.conversations.create(items=[{"role": "user", "content": "hello"}])
            with client.responses.stream(model="test", input="stream it", conversation=conversation.id) as stream:
                kinds = [event.type for event in stream]
                final = stream.get_final_response()
            assert kinds[0] == "response.created"
            assert kinds[-1] == "response.completed"
            assert "I saw 2 items" in final.output_text

        async with openai.AsyncOpenAI(base_url=f"{replica.url}/v1", api_key="unused", max_retries=0) as aclient:
            streamed = await aclient.responses.create(model="test", input="/long 30", stream=True)
            events = [event.model_dump(mode="json", exclude_unset=True) async for event in streamed]
            assert [e["sequence_number"] for e in events] == list(range(len(events)))
            response = events[-1]["response"]
            items = await aclient.conversations.items.list(response["conversation"]["id"], order="asc")
            assert [i.type for i in items.data] == ["message", "message"]
            with pytest.raises(openai.RateLimitError):
                await aclient.responses.create(model="test", input="/fail 429")

        async with httpx.AsyncClient(base_url=replica.url) as http:  # the raw stream, as the socket carries it
            reply = await http.post("/v1/responses", json={"model": "test", "input": "raw", "stream": True})
            raw = check_stream(parse_sse(reply.text))
            resumed = await http.get(
                f"/v1/responses/{raw[-1]['response']['id']}", params={"stream": "true", "starting_after": 2}
            )
            assert parse_sse(resumed.text) == raw[3:]
            check_response((await http.get(f"/v1/responses/{raw[-1]['response']['id']}")).json())
        assert replica.stop() == 0  # SIGINT ends it cleanly
    assert "Traceback" not in replica.output()


CONVERSATIONS = 10
TURNS = 8


async def test_two_replicas_on_one_postgres_never_lose_or_interleave_turns(pg_url: str, tmp_path: Path) -> None:
    with replicas(pg_url, tmp_path, 2, "--queue-turns") as pair:
        async with contextlib.AsyncExitStack() as exits:
            clients = [await exits.enter_async_context(httpx.AsyncClient(base_url=r.url, timeout=300)) for r in pair]
            ids = []
            for n in range(CONVERSATIONS):
                reply = await clients[n % 2].post("/v1/conversations", json={"metadata": {"n": str(n)}})
                ids.append(reply.json()["id"])

            async def turn(n: int, k: int) -> int:
                body = {"model": "test", "input": f"conversation {n} turn {k}", "conversation": ids[n]}
                reply = await clients[(n + k) % 2].post("/v1/responses", json=body)  # alternate replicas
                assert reply.status_code == 200, reply.text
                check_response(reply.json())
                return reply.status_code

            statuses = await asyncio.gather(*(turn(n, k) for n in range(CONVERSATIONS) for k in range(TURNS)))
        assert statuses == [200] * CONVERSATIONS * TURNS
        for replica in pair:
            assert replica.stop() == 0

    store = await PostgresStore.open(pg_url, max_size=2)
    try:
        for n, conversation in enumerate(ids):
            events = await store.read(conversation)
            check_turns(events, n)
    finally:
        await store.close()


def check_turns(events: Sequence[AnyEvent], n: int) -> None:
    """Every turn of conversation `n` is in its log once, whole, its events contiguous, its question answered."""
    said: list[str] = []
    current: str | None = None
    answered = 0
    for event in events:
        turn = getattr(event, "turn_id", None)
        if isinstance(event, TurnMarker) and event.status == "started":
            assert current is None, f"turn {event.turn_id} started inside turn {current}"
            current = event.turn_id
            continue
        if turn is not None:
            assert turn == current, f"an event of turn {turn} inside turn {current}"
        if isinstance(event, Message) and event.role == "user":
            said.append(text_of(event))
        if isinstance(event, Message) and event.role == "assistant":
            assert f'You said: "{said[-1]}"' in text_of(event)
            answered += 1
        if isinstance(event, TurnMarker):
            assert event.status == "completed", event
            current = None
    assert current is None
    assert sorted(said) == sorted(f"conversation {n} turn {k}" for k in range(TURNS))
    assert answered == TURNS
