"""Each invariant of DESIGN.md section 2, with its own tests (the property tests check them all on generated logs)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from contextfold import (
    CompactionPolicy,
    ConflictError,
    ContextOverflowError,
    Conversation,
    InvalidEventError,
    ModelResponse,
    ModelSettings,
    ScriptedModel,
    Store,
)
from contextfold.events import Compaction, ConfigChange, TextPart, ToolCall, ToolResult, system, user
from contextfold.models import ModelProfile, ResponseDone, StreamEvent, StreamingModel
from contextfold.view import Window
from contextfold.view._grammar import WIRE_APIS, check, validate_items
from contextfold.view._invariants import check as check_invariants

from . import scenario
from .scenario import turn

POLICY = CompactionPolicy(head_items=2, tail_turns=2)


async def busy_conversation(store: Store, turns: int = 12, output: int = 3000) -> Conversation:
    conv = await Conversation.create(store)
    await conv.append(ConfigChange(system_prompt="You are a careful agent."))
    for i in range(turns):
        await conv.append(*turn(f"step {i}", batches=[3, 1], output=f"out{i} " + "z" * output))
    return conv


# 1. Every tool call has exactly one result after it; a parallel batch is all in or all out.


async def test_compaction_never_splits_a_parallel_batch(store: Store) -> None:
    conv = await busy_conversation(store)
    for budget in (9000, 6000, 4000):
        await conv.compact(budget=budget, policy=POLICY, summariser=ScriptedModel(["## Goal\nsummary"]))
        assert validate_items(conv.window().items) == []
    calls = [i for i in conv.window().items if isinstance(i, ToolCall)]
    results = {i.call_id for i in conv.window().items if isinstance(i, ToolResult)}
    assert calls
    assert {c.call_id for c in calls} == results


async def test_head_that_ends_inside_a_batch_takes_the_whole_batch(store: Store) -> None:
    conv = await busy_conversation(store, turns=6)
    await conv.compact(budget=5000, policy=CompactionPolicy(head_items=2, tail_turns=1), summariser=None)
    items = conv.window().items
    # head_items=2 ends on the first call of a batch of 3: the head takes that batch and its results, no more
    assert [type(i).__name__ for i in items[:7]] == ["Message"] + ["ToolCall"] * 3 + ["ToolResult"] * 3
    assert items[7].id == conv.view.summary.id  # type: ignore[union-attr]
    assert validate_items(conv.window().items) == []


async def test_deleting_one_call_of_a_batch_removes_the_batch_and_its_results(store: Store) -> None:
    conv = await busy_conversation(store, turns=2)
    call = next(i for i in conv.window().items if isinstance(i, ToolCall))
    await conv.delete(call.id)
    items = conv.window().items
    assert validate_items(items) == []
    assert not any(isinstance(i, ToolCall) and i.batch_id == call.batch_id for i in items)
    assert sum(isinstance(i, ToolCall) for i in items) == 5  # the other batch of 1 and the 4 of turn 2


async def test_a_result_without_its_call_is_refused(store: Store) -> None:
    conv = await Conversation.create(store)
    with pytest.raises(InvalidEventError, match="no unanswered tool call"):
        await conv.append(ToolResult(call_id="nope", output="x"))
    assert conv.head == 0
    await conv.append(
        ToolCall(call_id="c", name="f", arguments="{}", batch_id="b"), ToolResult(call_id="c", output="1")
    )
    with pytest.raises(InvalidEventError, match="answer each call once"):
        await conv.append(ToolResult(call_id="c", output="again"))


# 2. Instructions and pinned items are always in the view, verbatim.


async def test_instructions_and_pins_survive_every_tier(store: Store) -> None:
    conv = await busy_conversation(store, turns=4)
    await conv.append(system("Never delete files."))
    pinned = next(i for i in conv.window().items if isinstance(i, ToolResult))
    await conv.pin(pinned.id)
    for i in range(10):
        await conv.append(*turn(f"more {i}", batches=[2], output="q" * 4000))
    for summariser in (ScriptedModel(["## Goal\nok"]), ScriptedModel([RuntimeError("down")]), None):
        await conv.compact(budget=5000, policy=POLICY, summariser=summariser)
        window = conv.window()
        assert window.system_prompt == "You are a careful agent."
        texts = [p.text for i in window.items if hasattr(i, "content") for p in i.content if isinstance(p, TextPart)]
        assert "Never delete files." in texts
        shown = [i for i in window.items if i.id == pinned.id]
        assert shown == [pinned]  # verbatim, not masked
        assert check_invariants(await store.read(conv.id), conv.view) == []


async def test_pinning_a_masked_result_shows_it_in_full_again(store: Store) -> None:
    conv = await busy_conversation(store, turns=8)
    await conv.compact(budget=20_000, policy=POLICY, summariser=None, trigger="auto")
    masked = sorted(conv.view.masked)
    assert masked, "the policy should have masked old tool output"
    item = conv.view.items[masked[0]]
    await conv.pin(item.id)
    assert masked[0] not in conv.view.masked
    assert conv.view.item_output(masked[0]) == item


async def test_a_compaction_that_drops_a_pinned_item_is_refused(store: Store) -> None:
    conv = await busy_conversation(store, turns=2)
    await conv.append(system("keep me"))
    bad = Compaction(strategy="summary", trigger="manual", kept=[], summary="s")
    with pytest.raises(InvalidEventError, match="must keep instructions"):
        await conv.append(bad)


# 3. Failed and interrupted turns stay in the log, marked, and out of the view.


@pytest.mark.parametrize("status", ["failed", "interrupted"])
async def test_failed_turns_leave_the_view_but_not_the_log(store: Store, status: str) -> None:
    conv = await busy_conversation(store, turns=1)
    before = [i.id for i in conv.window().items]
    events = await conv.append(*turn("doomed", batches=[2], status=status))  # type: ignore[arg-type]
    assert [i.id for i in conv.window().items] == before
    stored_ids = {e.id for e in await store.read(conv.id)}
    assert {e.id for e in events} <= stored_ids
    assert check_invariants(await store.read(conv.id), conv.view) == []


async def test_a_crashed_turn_is_out_of_the_view_once_marked_interrupted(store: Store) -> None:
    conv = await busy_conversation(store, turns=1)
    events = turn("cut off", batches=[1], status=None)
    await conv.append(*events)
    assert events[1].id in {i.id for i in conv.window().items}
    await conv.fit(budget=2000, summariser=None)  # a compaction mid-turn: the open turn is in the checkpoint
    reloaded = await Conversation.load(store, conv.id)  # a new process finds the open turn and marks it
    assert await reloaded.recover() == [events[0].turn_id]
    assert await reloaded.recover() == []
    assert events[1].id not in {i.id for i in reloaded.window().items}
    assert (await Conversation.load(store, conv.id)).view.state() == reloaded.view.state()


# 4. A summary sits after the head and before the verbatim tail and the new input.


async def test_summary_sits_between_head_and_tail(store: Store) -> None:
    conv = await busy_conversation(store, turns=10)
    await conv.compact(budget=8000, policy=POLICY, summariser=ScriptedModel(["## Goal\nthe summary"]))
    await conv.append(user("the new input"))
    items = conv.window().items
    texts = [i.content[0].text if hasattr(i, "content") and i.content else "" for i in items]  # type: ignore[union-attr]
    at = next(n for n, t in enumerate(texts) if "the summary" in t)
    assert texts[0] == "step 0"  # the head first
    assert texts[-1] == "the new input"
    assert all(i.seq <= conv.view.split_seq() for i in items[:at])
    assert all(i.seq > conv.view.split_seq() for i in items[at + 1 :])
    assert check_invariants(await store.read(conv.id), conv.view) == []


# 5. No view exceeds its budget; if what must stay does not fit, a clear error and nothing sent.


@pytest.mark.parametrize("budget", [3000, 5000, 9000, 20_000])
async def test_fit_never_leaves_the_view_over_budget(store: Store, budget: int) -> None:
    conv = await Conversation.create(store)
    model = ScriptedModel([lambda w: "## Goal\n" + "s " * 50] * 100)
    for i in range(30):
        await conv.append(*turn(f"step {i}", batches=[2], output="y" * (500 * (i % 7))))
        await conv.fit(budget=budget, summariser=model)
        assert conv.view.tokens <= budget


async def test_huge_or_empty_summaries_never_break_the_budget(store: Store) -> None:
    for answer in ("word " * 50_000, "", "   "):
        conv = await busy_conversation(store, turns=10)
        result = await conv.compact(budget=6000, policy=POLICY, summariser=ScriptedModel([answer]))
        assert result.strategy == "fallback"
        assert result.error
        assert conv.view.tokens <= 6000


async def test_instructions_larger_than_the_budget_raise_and_write_nothing(store: Store) -> None:
    conv = await Conversation.create(store)
    await conv.append(ConfigChange(system_prompt="rule " * 5000))
    await conv.append(*turn("hi"))
    head = conv.head
    with pytest.raises(ContextOverflowError, match="budget"):
        await conv.fit(budget=1000)
    assert conv.head == head
    model = ScriptedModel(["never called"])
    with pytest.raises(ContextOverflowError):
        await scenario.answer(conv, model, budget=1000)
    assert model.calls == []


# 6. Every view is checked against the target API's grammar before it is sent.


@pytest.mark.parametrize("api", WIRE_APIS)
async def test_compacted_views_render_valid_for_every_api(store: Store, api: str) -> None:
    conv = await busy_conversation(store, turns=10)
    await conv.append(system("mid-conversation instruction"))
    for budget in (12_000, 7000):
        await conv.compact(budget=budget, policy=POLICY, summariser=ScriptedModel(["## Goal\nsummary"]))
        check(conv.window(), api)


# 7. A compaction commits only if the head it was computed on is unchanged.


class InterleavingSummariser(StreamingModel):
    """A summariser during whose call another writer appends to the same conversation."""

    def __init__(self, other: Conversation) -> None:
        super().__init__("interleaving", profile=ModelProfile())
        self.other = other
        self.calls = 0

    async def _stream_once(self, window: Window, settings: ModelSettings) -> AsyncIterator[StreamEvent]:
        self.calls += 1
        if self.calls == 1:
            await self.other.append(*turn("written meanwhile"))
        yield ResponseDone(ModelResponse(text="## Goal\nsummary"))


async def test_compaction_on_a_stale_head_is_recomputed(store: Store) -> None:
    conv = await busy_conversation(store, turns=8)
    other = await Conversation.load(store, conv.id)
    summariser = InterleavingSummariser(other)
    result = await conv.compact(budget=8000, policy=POLICY, summariser=summariser)
    assert result.compacted
    assert summariser.calls == 2  # computed again on the new head
    log = await store.read(conv.id)
    compaction = next(e for e in log if isinstance(e, Compaction))
    assert compaction.based_on_head == compaction.seq - 1
    assert "written meanwhile" in {
        p.text for i in conv.window().items if hasattr(i, "content") for p in i.content if isinstance(p, TextPart)
    }


async def test_concurrent_writers_never_lose_an_event(store: Store) -> None:
    conv = await Conversation.create(store)

    async def writer(n: int) -> None:
        mine = await Conversation.load(store, conv.id)
        for i in range(5):
            while True:
                try:
                    await mine.append(*turn(f"writer {n} turn {i}"))
                    break
                except ConflictError:
                    await mine.refresh()

    await asyncio.gather(*(writer(n) for n in range(6)))
    log = await store.read(conv.id)
    assert [e.seq for e in log] == list(range(1, len(log) + 1))
    assert len(log) == 6 * 5 * 4


# 8. Deleting an item erases its content, and a summary that covered it leaves the view until recomputed.


async def test_deletion_erases_content_and_withdraws_the_summary(store: Store) -> None:
    conv = await Conversation.create(store)
    secret = await conv.append(user("my password is HUNTER2-SECRET"))
    for i in range(10):
        await conv.append(*turn(f"step {i}", batches=[1], output="w" * 3000))
    model = ScriptedModel([lambda w: "## Identifiers\n" + ("HUNTER2-SECRET" if "HUNTER2" in str(w) else "none")] * 3)
    await conv.compact(budget=6000, policy=CompactionPolicy(head_items=0, tail_turns=1), summariser=model)
    assert "HUNTER2-SECRET" in str(conv.window())
    await conv.delete(secret[0].id)
    assert "HUNTER2" not in str(conv.window())  # the summary left the view
    assert conv.view.active_summary() is None
    assert not any("HUNTER2" in str(e) for e in await store.read(conv.id))  # erased from storage
    assert await conv.recall("HUNTER2 password") == []
    result = await conv.compact(budget=6000, policy=CompactionPolicy(head_items=0, tail_turns=1), summariser=model)
    assert result.compacted
    summary = conv.view.active_summary()
    assert summary is not None
    assert summary.summary == "## Identifiers\nnone"  # recomputed without the deleted content
    assert check_invariants(await store.read(conv.id), conv.view) == []
    assert (await Conversation.load(store, conv.id)).view.state() == conv.view.state()
