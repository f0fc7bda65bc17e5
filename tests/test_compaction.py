"""The compaction policy: trigger/target hysteresis, the three tiers, reactive and manual compaction."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from contextfold import (
    CompactionPolicy,
    ContextLengthError,
    Conversation,
    InvalidRequestError,
    ModelResponse,
    ModelSettings,
    ScriptedModel,
    Store,
)
from contextfold.compaction import SUMMARY_PROMPT
from contextfold.events import Compaction, TextPart, ToolResult, text_of
from contextfold.view import Window

from .scenario import answer, turn

BUDGET = 10_000


def window_text(window: Window) -> str:
    return "\n".join(
        p.text for i in window.items if hasattr(i, "content") for p in i.content if isinstance(p, TextPart)
    )


async def grow(
    conv: Conversation, turns: int, output: int = 2000, start: int = 0, tool_summary: str | None = None
) -> None:
    for i in range(start, start + turns):
        events = turn(f"step {i}", batches=[2], output=f"result {i}: " + "v" * output, tool_summary=tool_summary)
        await conv.append(*events)


@pytest.fixture
async def conv(sqlite_store: Store) -> Conversation:
    return await Conversation.create(sqlite_store)


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(InvalidRequestError, match="target < threshold"):
        CompactionPolicy(threshold=0.5, target=0.6)
    with pytest.raises(InvalidRequestError, match="tail_turns"):
        CompactionPolicy(tail_turns=0)
    with pytest.raises(InvalidRequestError, match="summary_share"):
        CompactionPolicy(summary_share=1.5)


async def test_nothing_happens_below_the_threshold(conv: Conversation) -> None:
    await grow(conv, 3)
    assert conv.view.tokens < 0.8 * BUDGET
    result = await conv.fit(budget=BUDGET, summariser=ScriptedModel())
    assert not result.compacted
    assert result.tokens_after == result.tokens_before


async def test_over_the_threshold_it_compacts_to_the_target_then_waits(conv: Conversation) -> None:
    model = ScriptedModel([lambda w: "## Goal\nkeep going"] * 20)
    compacted_at = []
    for i in range(40):
        await grow(conv, 1, start=i)
        before = conv.view.tokens
        result = await conv.fit(budget=BUDGET, summariser=model)
        if result.compacted:
            assert before > 0.8 * BUDGET
            assert result.tokens_after <= 0.5 * BUDGET
            compacted_at.append(i)
        assert conv.view.tokens <= BUDGET
    assert len(compacted_at) >= 3
    gaps = [b - a for a, b in itertools.pairwise(compacted_at)]
    assert min(gaps) >= 2  # hysteresis: turns pass between compactions


async def test_masking_comes_first_and_uses_the_tools_own_summary(conv: Conversation) -> None:
    await grow(conv, 9, tool_summary="read 2 KB of a.py; it defines main()")
    model = ScriptedModel()  # masking alone must suffice: the summariser is never called
    result = await conv.fit(budget=BUDGET, summariser=model)
    assert result.compacted
    assert result.strategy == "mask"
    assert model.calls == []
    masked = [conv.view.item_output(seq) for seq in sorted(conv.view.masked)]
    assert masked
    assert all(isinstance(m, ToolResult) and m.output.startswith("read 2 KB of a.py") for m in masked)
    assert all("expand event" in m.output for m in masked if isinstance(m, ToolResult))


async def test_summary_is_structured_and_builds_on_the_previous_one(conv: Conversation) -> None:
    model = ScriptedModel(["## Goal\nFIRST-SUMMARY", "## Goal\nSECOND-SUMMARY"])
    await grow(conv, 12)
    await conv.compact(budget=BUDGET, summariser=model, instructions="keep the file names")
    await grow(conv, 12, start=12)
    await conv.compact(budget=BUDGET, summariser=model)
    model.assert_consumed()
    first, second = (window_text(w) for w, _ in model.calls)
    assert model.calls[0][0].system_prompt == SUMMARY_PROMPT
    for section in ("## Goal", "## Decisions", "## Identifiers", "## Errors and fixes", "## Current state"):
        assert section in SUMMARY_PROMPT
    assert "keep the file names" in first
    assert "<previous-summary>\n## Goal\nFIRST-SUMMARY" in second
    assert "SECOND-SUMMARY" in window_text(conv.window())
    second_compaction = conv.view.active_summary()
    assert second_compaction is not None
    assert second_compaction.previous is not None
    assert second_compaction.covers[0][0] < second_compaction.folded[0][0]  # covers the first fold too


class SlowModel:
    name = "slow"

    async def request(self, window: Window, settings: ModelSettings) -> ModelResponse:
        await asyncio.sleep(10)
        return ModelResponse(text="too late")


@pytest.mark.parametrize(
    ("summariser", "reason"),
    [
        (ScriptedModel([RuntimeError("provider down")]), "summariser failed: RuntimeError: provider down"),
        (ScriptedModel([""]), "empty summary"),
        (ScriptedModel(["word " * 40_000]), "exceeds its"),
        (SlowModel(), "timed out"),
        (None, "no summariser"),
    ],
)
async def test_fallback_digest_always_succeeds(conv: Conversation, summariser: object, reason: str) -> None:
    await grow(conv, 12)
    policy = CompactionPolicy(summariser_timeout=0.05)
    result = await conv.compact(budget=BUDGET, policy=policy, summariser=summariser)  # type: ignore[arg-type]
    assert result.compacted
    assert result.strategy == "fallback"
    assert result.error is not None
    assert reason in result.error
    text = window_text(conv.window())
    assert "Digest of" in text
    assert "step 3" in text  # the digest keeps the first words of folded messages
    assert conv.view.tokens <= 0.5 * BUDGET


async def test_tail_gives_up_turns_while_it_alone_is_too_big(conv: Conversation) -> None:
    await grow(conv, 4, output=400)
    await grow(conv, 4, output=8000, start=4)  # the recent turns are huge
    policy = CompactionPolicy(tail_turns=4, head_items=0)
    await conv.compact(budget=BUDGET, policy=policy, summariser=ScriptedModel(["## Goal\nx"]))
    assert conv.turns() == 1  # only the newest turn stayed verbatim
    assert conv.view.tokens <= BUDGET


async def test_a_single_huge_tool_output_is_masked_rather_than_sent(conv: Conversation) -> None:
    await grow(conv, 2)
    await conv.append(*turn("read the log", batches=[1], output="L" * 60_000))
    await conv.fit(budget=BUDGET, summariser=ScriptedModel(["## Goal\nx"] * 2))
    assert conv.view.tokens <= BUDGET
    assert conv.view.masked


async def test_reactive_compaction_retries_once_after_a_context_length_error(conv: Conversation) -> None:
    await grow(conv, 6)  # under the threshold: the one compaction is the refusal's
    model = ScriptedModel([ContextLengthError("prompt is too long"), "the answer"])
    text = await answer(conv, model, budget=BUDGET, summariser=ScriptedModel(["## Goal\nx"]))
    assert text == "the answer"
    model.assert_consumed()
    compaction = conv.view.summary or next(e for e in await conv.store.read(conv.id) if isinstance(e, Compaction))
    assert compaction.trigger == "reactive"
    first, retry = (sum(len(text_of(i)) for i in w.items) for w, _ in model.calls)
    assert retry < first / 2


async def test_a_second_context_length_error_reaches_the_caller(conv: Conversation) -> None:
    await grow(conv, 8)
    model = ScriptedModel([ContextLengthError("too long"), ContextLengthError("still too long")])
    with pytest.raises(ContextLengthError, match="still too long"):
        await answer(conv, model, budget=BUDGET, summariser=ScriptedModel(["## Goal\nx"]))


async def test_manual_compaction_returns_a_result_record(conv: Conversation) -> None:
    await grow(conv, 10)
    before_items, before_turns = len(conv.view.items), conv.turns()
    result = await conv.compact(budget=BUDGET, summariser=ScriptedModel(["## Goal\nrecord"]), instructions="focus")
    assert result.compacted
    assert result.trigger == "manual"
    assert result.strategy == "summary"
    assert (result.messages_before, result.turns_before) == (before_items, before_turns)
    assert result.messages_after < result.messages_before
    assert result.turns_after < result.turns_before
    assert result.tokens_after < result.tokens_before
    assert result.summary_length == len("## Goal\nrecord")
    assert result.error is None
    event = conv.view.summary
    assert event is not None
    assert event.id == result.compaction_id
    assert event.instructions == "focus"
    assert event.model == "scripted"
    assert event.usage is not None
    assert event.duration_ms > 0
    assert event.tokens_before == result.tokens_before
    assert event.based_on_head == event.seq - 1


async def test_manual_compaction_with_nothing_to_fold_says_so(conv: Conversation) -> None:
    await grow(conv, 1)
    result = await conv.compact(budget=BUDGET, summariser=ScriptedModel())
    assert not result.compacted
    assert result.compaction_id is None


async def test_a_refusal_that_compaction_cannot_fix_reaches_the_caller_as_the_providers_error(
    conv: Conversation,
) -> None:
    await conv.append(*turn("huge question " + "q" * 20_000))
    model = ScriptedModel([ContextLengthError("prompt is too long: 9000 tokens > 8192")])
    with pytest.raises(ContextLengthError, match="8192") as caught:
        await answer(conv, model, budget=BUDGET, summariser=ScriptedModel())
    assert "budget" in str(caught.value.__cause__)


def test_a_deferred_calls_result_stays_in_the_group_of_its_call() -> None:
    """A call the caller runs ends its turn and its result opens the next one: a compaction must never split them."""
    from contextfold.compaction._plan import turn_groups
    from contextfold.events import Item, Message, ToolCall

    items: dict[int, Item] = {
        1: Message(role="user", content=[TextPart("read it")], turn_id="a"),
        2: ToolCall(call_id="c1", name="read", arguments="{}", batch_id="b", turn_id="a"),
        3: ToolResult(call_id="c1", output="contents", turn_id="b"),
        4: Message(role="assistant", content=[TextPart("done")], turn_id="b"),
        5: Message(role="user", content=[TextPart("next")], turn_id="c"),
    }
    assert turn_groups(items) == [[1, 2, 3], [4], [5]]
