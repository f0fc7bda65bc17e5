"""Recall and expand: what was folded away stays searchable and readable."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from contextfold import CompactionPolicy, Conversation, NotFoundError, ScriptedModel, Store
from contextfold.events import Compaction, Message, ToolResult
from contextfold.store import SQLiteStore

from .scenario import turn


async def folded_conversation(store: Store) -> Conversation:
    conv = await Conversation.create(store)
    await conv.append(*turn("the deploy key is ZEBRA-7781, remember it", batches=[1], output="listing of /etc"))
    for i in range(12):
        await conv.append(*turn(f"step {i}", batches=[1], output=f"build log {i} " + "b" * 3000))
    await conv.compact(
        budget=8000, policy=CompactionPolicy(head_items=0, tail_turns=1), summariser=ScriptedModel(["x"])
    )
    return conv


async def test_recall_finds_folded_events_and_skips_what_is_shown(store: Store) -> None:
    conv = await folded_conversation(store)
    hits = await conv.recall("deploy key ZEBRA")
    assert hits
    assert "ZEBRA-7781" in hits[0].snippet
    assert hits[0].seq not in conv.view.items
    await conv.append(*turn("ZEBRA again, shown in full"))
    again = await conv.recall("ZEBRA")
    assert all(h.seq not in conv.view.items for h in again)


async def test_recall_is_scoped_to_its_conversation(store: Store) -> None:
    conv = await folded_conversation(store)
    other = await Conversation.create(store)
    await other.append(*turn("nothing here"))
    assert await other.recall("ZEBRA") == []
    assert await conv.recall("ZEBRA")


async def test_expand_returns_the_folded_events_verbatim_within_budget(store: Store) -> None:
    conv = await folded_conversation(store)
    compaction = conv.view.summary
    assert isinstance(compaction, Compaction)
    everything = await conv.expand(compaction.id, max_tokens=1_000_000)
    assert not everything.truncated
    assert everything.total == len(everything.events)
    first = everything.events[0]
    assert isinstance(first, Message)
    assert "ZEBRA-7781" in first.content[0].text  # type: ignore[union-attr]
    some = await conv.expand(compaction.id, max_tokens=2000)
    assert some.truncated
    assert sum(e.tokens for e in some.events) <= 2000
    assert some.events == everything.events[: len(some.events)]
    with pytest.raises(NotFoundError, match="no compaction"):
        await conv.expand("ev_missing", max_tokens=100)


async def test_masked_tool_output_is_recallable_and_expandable(store: Store) -> None:
    conv = await Conversation.create(store)
    for i in range(10):
        await conv.append(*turn(f"step {i}", batches=[1], output=f"UNIQUE-TOKEN-{i} " + "c" * 3000))
    result = await conv.fit(budget=10_000, summariser=ScriptedModel())
    assert result.strategy == "mask"
    masked = sorted(conv.view.masked)
    first = conv.view.items[masked[0]]
    assert isinstance(first, ToolResult)
    token = first.output.split()[0]  # UNIQUE-TOKEN-n of the oldest masked output (the head keeps turn 0)
    hits = await conv.recall(token)
    assert hits
    assert hits[0].seq == masked[0]
    assert result.compaction_id is not None
    expansion = await conv.expand(result.compaction_id, max_tokens=100_000)
    assert [e.seq for e in expansion.events] == masked
    assert expansion.events[0] == first


async def test_sqlite_search_index_stays_consistent_through_erasure(tmp_path: Path) -> None:
    path = tmp_path / "fts.db"
    store = await SQLiteStore.open(path)
    try:
        conv = await folded_conversation(store)
        await conv.delete(conv.window().items[-1].id)
        for event in (await store.read(conv.id))[:40]:
            if event.seq in conv.view.items:
                await conv.delete(event.id)
        other = await folded_conversation(store)
        await store.conversations.delete(other.id)
        await conv.append(*turn("after the deletions", batches=[1]))
    finally:
        await store.close()
    with sqlite3.connect(path) as db:  # raises "database disk image is malformed" if index and table disagree
        db.execute("INSERT INTO events_fts(events_fts, rank) VALUES ('integrity-check', 1)")
    db.close()
