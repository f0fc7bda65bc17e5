"""The Conversation API: checkpointed loading, and clear errors for mistakes that write nothing."""

from __future__ import annotations

import pytest

from contextfold import Conversation, InvalidEventError, NotFoundError, ScriptedModel, Store
from contextfold.events import Message, user

from .scenario import turn


async def test_cold_load_reads_the_view_not_the_log(store: Store) -> None:
    conv = await Conversation.create(store)
    model = ScriptedModel([lambda w: "## Goal\ncontinue"] * 200)
    for i in range(150):
        await conv.append(*turn(f"step {i}", batches=[2], output="o" * 2500))
        await conv.fit(budget=8000, summariser=model)
    checkpoint = await store.checkpoint(conv.id)
    assert checkpoint.compaction is not None
    read = len(checkpoint.kept) + len(checkpoint.after)
    assert read < len(conv.view.items) + 60  # the items in view, plus the few bookkeeping events since
    assert read * 10 < conv.head  # a small fraction of the log
    loaded = await Conversation.load(store, conv.id)
    assert loaded.view.state() == conv.view.state()


async def test_mistakes_raise_clear_errors_and_write_nothing(store: Store) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        await Conversation.load(store, "conv_nope")
    conv = await Conversation.create(store)
    for i in range(12):
        await conv.append(*turn(f"step {i}", batches=[1], output="o" * 3000))
    await conv.compact(budget=6000, summariser=ScriptedModel(["## Goal\nx"]))
    head = conv.head
    with pytest.raises(NotFoundError, match="has no item 'ev_nope'"):
        await conv.pin("ev_nope")
    with pytest.raises(NotFoundError, match="has no item"):
        await conv.delete("ev_nope")
    folded = next(e for e in await store.read(conv.id) if isinstance(e, Message) and e.seq not in conv.view.items)
    with pytest.raises(InvalidEventError, match="no longer in the view"):
        await conv.pin(folded.id)
    other = await Conversation.create(store)
    (foreign,) = await other.append(user("elsewhere"))
    with pytest.raises(InvalidEventError, match="belongs to conversation"):
        await conv.append(foreign)
    assert conv.head == head
    assert (await store.conversations.get(conv.id)).head == head
