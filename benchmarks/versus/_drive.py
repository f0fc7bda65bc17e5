"""The client both servers get: the same httpx calls to the Responses and Conversations APIs.

A turn is a non-streaming `POST /v1/responses` naming a conversation made with `POST /v1/conversations`; only the
model name differs between the systems (each names the upstream's model its own way).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx

from ._servers import Server

QUESTION = "why does test {n} fail? " + "x" * 200
"""The input of one turn (about 60 tokens), the same as the `server` section's."""


async def direct(upstream: str, count: int) -> list[float]:
    """The upstream alone, asked straight from the client: the floor every turn's latency is measured against."""
    body = {"model": "bench", "stream": True, "messages": [{"role": "user", "content": QUESTION.format(n=0)}]}
    times = []
    async with httpx.AsyncClient(base_url=upstream) as client:
        for _ in range(count):
            started = time.perf_counter()
            async with client.stream("POST", "/chat/completions", json=body) as response:
                async for _chunk in response.aiter_bytes():
                    pass
            times.append(time.perf_counter() - started)
    return times


async def new_conversation(client: httpx.AsyncClient) -> str:
    response = await client.post("/v1/conversations", json={})
    response.raise_for_status()
    conversation: str = response.json()["id"]
    return conversation


async def turn(client: httpx.AsyncClient, server: Server, conversation: str, text: str) -> httpx.Response:
    body = {"model": server.model, "conversation": conversation, "input": text}
    return await client.post("/v1/responses", json=body)


async def warm_up(server: Server) -> None:
    """One turn on a conversation of its own, so no measured turn pays for a server's first request."""
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
        response = await turn(client, server, await new_conversation(client), "hello")
        if response.status_code != 200:
            raise RuntimeError(f"{server.name}, warm-up turn: {response.status_code} {response.text[:500]}")


async def one_conversation(server: Server, turns: int) -> list[float]:
    """Seconds each turn of one new conversation took, in order."""
    times = []
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
        conversation = await new_conversation(client)
        for n in range(turns):
            started = time.perf_counter()
            response = await turn(client, server, conversation, QUESTION.format(n=n))
            times.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(f"{server.name}, turn {n + 1}: {response.status_code} {response.text[:500]}")
    return times


async def concurrent(server: Server, conversations: int, turns_each: int) -> float:
    """Wall seconds for `conversations` conversations at once, each taking `turns_each` turns in a row."""
    limits = httpx.Limits(max_connections=conversations)
    async with httpx.AsyncClient(base_url=server.url, timeout=300, limits=limits) as client:
        ids = [await new_conversation(client) for _ in range(conversations)]

        async def drive(conversation: str) -> None:
            for n in range(turns_each):
                response = await turn(client, server, conversation, f"turn {n}: what next?")
                if response.status_code != 200:
                    raise RuntimeError(f"{server.name}: {response.status_code} {response.text[:500]}")

        started = time.perf_counter()
        await asyncio.gather(*(drive(c) for c in ids))
        return time.perf_counter() - started


@dataclass(frozen=True)
class AtOnce:
    """What became of `sent` turns posted at once to one conversation."""

    sent: int
    accepted: int
    """Answered 200."""
    refused: int
    """Answered 409 (`conversation_busy`): the client knows the turn was not taken and can send it again."""
    in_items: int
    """Questions the conversation's items list (`GET /v1/conversations/{id}/items`) after the next turn."""
    in_context: int
    """Questions present in the history the model gets on the next turn."""
    whole: int
    """Of those, questions followed at once by their own answer (the turn kept whole and in order)."""
    saw_earlier: int
    """Accepted turns whose model request held every turn accepted before them, with its answer."""


async def at_once(server: Server, recorder: str, sent: int) -> AtOnce:
    """`sent` turns at once on a conversation that has one turn, then one more turn: what reached the model."""
    questions = [f"concurrent question {k}" for k in range(sent)]
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
        conversation = await new_conversation(client)
        await turn(client, server, conversation, "first question")
        async with httpx.AsyncClient(base_url=recorder) as upstream:
            await upstream.delete("/requests")
            responses = await asyncio.gather(*(turn(client, server, conversation, q) for q in questions))
            following = await turn(client, server, conversation, "next question")
            if following.status_code != 200:
                raise RuntimeError(f"{server.name}: {following.status_code} {following.text[:500]}")
            requests: list[list[dict[str, Any]]] = (await upstream.get("/requests")).json()
        listed = await client.get(f"/v1/conversations/{conversation}/items", params={"limit": 100, "order": "asc"})
        listed.raise_for_status()
        items = [_item_text(item) for item in listed.json()["data"] if item.get("role") == "user"]
    statuses = [r.status_code for r in responses]
    unexpected = [s for s in statuses if s not in (200, 409)]
    if unexpected:
        raise RuntimeError(f"{server.name}: concurrent turns answered {unexpected}")
    last = requests[-1]
    texts = [(m["role"], m["text"]) for m in last]
    in_context = [q for q in questions if ("user", q) in texts]
    whole = [q for q in in_context if _answered_in_place(texts, q)]
    saw = 0
    accepted_requests = requests[:-1]  # one per accepted turn, in the order the upstream got them
    for position, request in enumerate(accepted_requests):
        seen = [(m["role"], m["text"]) for m in request]
        earlier = [q for q in questions if ("user", q) in seen and _answered_in_place(seen, q)]
        saw += len(earlier) == position
    in_items = sum(q in items for q in questions)
    return AtOnce(sent, statuses.count(200), statuses.count(409), in_items, len(in_context), len(whole), saw)


def _item_text(item: dict[str, Any]) -> str:
    content = item.get("content")
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [] if isinstance(part, dict))


def _answered_in_place(texts: list[tuple[str, str]], question: str) -> bool:
    at = texts.index(("user", question))
    return at + 1 < len(texts) and texts[at + 1] == ("assistant", f"answer to: {question}")
