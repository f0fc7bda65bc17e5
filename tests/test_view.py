"""The fold itself: ordering, configuration, pins, masking, token accounting, checkpointed construction."""

from __future__ import annotations

import msgspec
import pytest

from contextfold import View
from contextfold.events import (
    Compaction,
    ConfigChange,
    Deletion,
    Event,
    Pin,
    ToolResult,
    ToolSpec,
    Usage,
    assistant,
    user,
)
from contextfold.view import masked_output

from .scenario import turn


def stamp(events: list[Event], start: int = 1) -> list[Event]:
    return [msgspec.structs.replace(e, seq=n, tokens=e.tokens or 10) for n, e in enumerate(events, start)]


def test_events_must_arrive_in_order() -> None:
    view = View()
    (event,) = stamp([user("hi")], start=2)
    with pytest.raises(ValueError, match="does not follow view head 0"):
        view.apply(event)


def test_configuration_sets_and_clears_settings() -> None:
    tool = ToolSpec(name="read", description="read a file", parameters={"type": "object"})
    log = stamp(
        [
            ConfigChange(system_prompt="be brief", tools=[tool], max_output_tokens=500),
            ConfigChange(max_output_tokens=None),
            ConfigChange(system_prompt="be thorough"),
        ]
    )
    view = View.replay(log)
    window = view.window()
    assert (window.system_prompt, window.tools, window.max_output_tokens) == ("be thorough", [tool], None)
    assert view.kept_seqs == [1, 2, 3]  # each setting's newest change stays in force
    assert view.tokens > 0  # the prompt and the tool schema count


def test_pins_only_apply_to_items_in_view_and_can_be_undone() -> None:
    log = stamp([user("a"), Pin(target=1), Pin(target=99), Pin(target=1, pinned=False)])
    view = View.replay(log[:2])
    assert view.pinned == {1}
    view.apply(log[2])
    assert view.pinned == {1}
    view.apply(log[3])
    assert view.pinned == set()


def test_deletion_removes_items_and_resets_the_usage_anchor() -> None:
    log = stamp(
        [user("a"), assistant("b"), Usage(model="m", input_tokens=100, output_tokens=1, estimated_input_tokens=60)]
    )
    view = View.replay(log)
    assert view.offset == 40
    assert view.tokens == view.estimated_tokens + 40
    view.apply(stamp([Deletion(targets=[1])], start=4)[0])
    assert list(view.items) == [2]
    assert view.offset == 0


def test_masked_results_show_the_tool_summary_or_a_pointer() -> None:
    with_summary = ToolResult(call_id="c", output="x" * 1000, summary="3 files changed")
    without = ToolResult(call_id="c", output="x" * 1000)
    assert masked_output(with_summary).startswith("3 files changed")
    assert with_summary.id in masked_output(with_summary)
    assert "recall or expand event" in masked_output(without)


def test_a_compaction_makes_the_view_what_it_says_and_a_checkpoint_rebuilds_it() -> None:
    events = stamp([*turn("one", batches=[1]), *turn("two", batches=[1]), *turn("three", batches=[2])])
    view = View.replay(events)
    third_turn = [s for s, i in view.items.items() if i.turn_id == events[-1].turn_id]
    results = [s for s in third_turn if isinstance(view.items[s], ToolResult)]
    compaction = Compaction(
        strategy="summary",
        trigger="manual",
        kept=[2, *third_turn],
        masked=results[:1],
        folded=[(3, 11)],
        covers=[(3, 11)],
        summary="S",
        seq=len(events) + 1,
        tokens=5,
    )
    view.apply(compaction)
    assert list(view.items) == [2, *third_turn]
    assert view.masked == set(results[:1])
    assert view.active_summary() == compaction
    window = view.window()
    assert window.items[0].seq == 2
    assert window.items[1].id == compaction.id  # the summary after the head
    kept = {seq: e for e in events for seq in [e.seq] if seq in compaction.kept}
    rebuilt = View.from_checkpoint(compaction, kept, None, [])
    assert rebuilt.state() == view.state()
    assert rebuilt.window() == window
