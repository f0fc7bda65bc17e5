"""`appends`: how many one-turn appends per second a store takes, one writer and 100 at once.

Each append is one transaction holding one small turn's four events (the user's message, a tool call, its ~2 KB
output, the answer), estimated as `Conversation.append` would. Sequential: one conversation, one append after the
other, straight to `store.append` and through `Conversation.append` (which also checks the events and folds them
into the view). Concurrent: 100 asyncio tasks, each appending to its own conversation. SQLite runs in WAL mode with
synchronous=NORMAL; the PostgreSQL server runs with fsync off (it is a throwaway), so neither waits for the disk.
"""

from __future__ import annotations

import asyncio
import random
import time

import msgspec

from contextfold import Conversation, TokenEstimator
from contextfold.events import Event, Message, TextPart, ToolCall, ToolResult, new_id
from contextfold.store import PostgresStore, SQLiteStore, Store

from ._report import Table, median, ms, percentile
from ._stores import RESULTS, Context, progress

TASKS = 100


def _turn(rng: random.Random, estimator: TokenEstimator) -> list[Event]:
    call_id = new_id("call")
    events: list[Event] = [
        Message(role="user", content=[TextPart(f"please look at issue {rng.randint(1, 9999)} " * 8)]),
        ToolCall(call_id=call_id, name="read_file", arguments='{"path": "src/app.py"}', batch_id=new_id("batch")),
        ToolResult(call_id=call_id, output="".join(rng.choices("abcdefghij klmnop\n", k=2_000))),
        Message(role="assistant", content=[TextPart("the fix is in the parser; " * 12)]),
    ]
    return [msgspec.structs.replace(event, tokens=estimator.estimate(event)) for event in events]


async def _sequential(store: Store, turns: list[list[Event]]) -> list[float]:
    info = await store.conversations.create()
    latencies = []
    for head, events in enumerate(turns):
        started = time.perf_counter()
        await store.append(info.id, events, head * len(events))
        latencies.append(time.perf_counter() - started)
    return latencies


async def _through_conversation(store: Store, turns: list[list[Event]]) -> list[float]:
    conversation = await Conversation.create(store)
    latencies = []
    for events in turns:
        started = time.perf_counter()
        await conversation.append(*events)
        latencies.append(time.perf_counter() - started)
    return latencies


async def _concurrent(store: Store, turns: list[list[Event]]) -> list[float]:
    ids = [(await store.conversations.create()).id for _ in range(TASKS)]
    per_task = len(turns) // TASKS
    latencies: list[float] = []

    async def writer(index: int) -> None:
        for head, events in enumerate(turns[index * per_task : (index + 1) * per_task]):
            started = time.perf_counter()
            await store.append(ids[index], events, head * len(events))
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(writer(index) for index in range(TASKS)))
    return latencies


async def run(ctx: Context) -> list[Table]:
    count = 500 if ctx.quick else 2_000
    rng, estimator = random.Random(3), TokenEstimator()
    table = Table(
        "appends: one turn (4 events, ~2.6 KB) per append, each its own transaction",
        ["store", "writers", "appends", "seconds", "appends/s", "events/s", "median latency (ms)", "p99 latency (ms)"],
    )
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "appends-scratch.db"
    url = ctx.pg.database()
    try:
        for name in ("sqlite", "postgresql"):
            for leftover in RESULTS.glob(path.name + "*"):
                leftover.unlink()
            store: Store = await SQLiteStore.open(path) if name == "sqlite" else await PostgresStore.open(url)
            try:
                for mode, measure in (
                    ("1, store.append", _sequential),
                    ("1, Conversation.append", _through_conversation),
                    (f"{TASKS} tasks, one conversation each", _concurrent),
                ):
                    # fresh events every time: ids are unique per store
                    turns = [_turn(rng, estimator) for _ in range(count)]
                    started = time.perf_counter()
                    latencies = await measure(store, turns)
                    seconds = time.perf_counter() - started
                    table.add(
                        name,
                        mode,
                        len(latencies),
                        seconds,
                        len(latencies) / seconds,
                        4 * len(latencies) / seconds,
                        ms(median(latencies)),
                        ms(percentile(latencies, 0.99)),
                    )
                    progress(f"appends {name} {mode}: {len(latencies) / seconds:.0f}/s")
            finally:
                await store.close()
    finally:
        ctx.pg.drop(url)
        for leftover in RESULTS.glob(path.name + "*"):
            leftover.unlink()
    table.notes.append(
        "PostgreSQL: the store's default pool (up to 10 connections), so 100 writers queue for connections. "
        "SQLite: one writer thread per store, so concurrent appends queue for it."
    )
    return [table]
