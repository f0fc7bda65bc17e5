"""Incremental Chat rendering (`models/_incremental.py`) equals a whole render, for any window and any sequence
of windows: growing at the end, cut at the head (a compaction), items replaced (a masking), or unrelated."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from contextfold.events import Item, Message, TextPart, ToolCall, ToolResult
from contextfold.models._incremental import IncrementalChat
from contextfold.view import Window
from contextfold.view._render import render_openai_chat

_texts = st.sampled_from(["", "hi", "ok then", " "])


@st.composite
def _item(draw: st.DrawFn) -> Item:
    kind = draw(st.sampled_from(["user", "assistant", "system", "call", "result"]))
    turn = draw(st.sampled_from(["t1", "t2", None]))
    if kind == "call":
        batch = draw(st.sampled_from(["b1", "b2"]))
        call_id = draw(st.sampled_from(["c1", "c2", "c3"]))
        return ToolCall(call_id=call_id, name="f", arguments="{}", batch_id=batch, turn_id=turn)
    if kind == "result":
        return ToolResult(call_id=draw(st.sampled_from(["c1", "c2", "c3"])), output=draw(_texts), turn_id=turn)
    content = [TextPart(t) for t in draw(st.lists(_texts, max_size=2))]
    return Message(role=kind, content=content, turn_id=turn)  # type: ignore[arg-type]


_windows = st.lists(_item(), max_size=14)
_steps = st.lists(
    st.tuples(st.sampled_from(["grow", "compact", "replace", "fresh"]), _windows, st.integers(0, 14)), max_size=6
)


@settings(max_examples=300, deadline=None)
@given(first=_windows, steps=_steps, system=st.sampled_from([None, "Be brief."]))
def test_incremental_render_equals_a_whole_render(
    first: list[Item], steps: list[tuple[str, list[Item], int]], system: str | None
) -> None:
    render = IncrementalChat()
    items = first
    for step in [("fresh", first, 0), *steps]:
        kind, more, at = step
        if kind == "grow":
            items = [*items, *more]
        elif kind == "compact":
            items = [*more[:1], *items[at:]]
        elif kind == "replace" and items:
            items = [*items[: at % len(items)], *more[:1], *items[at % len(items) + 1 :]]
        elif kind == "fresh":
            items = more
        window = Window(system, None, None, items)
        assert render(window) == render_openai_chat(window)


def test_a_growing_window_renders_only_its_new_blocks() -> None:
    render = IncrementalChat()
    items: list[Item] = []
    for n in range(50):
        items = [
            *items,
            Message(role="user", content=[TextPart(f"q{n}")]),
            Message(role="assistant", content=[TextPart("a")]),
        ]
        render(Window("sys", None, None, items))
    assert render.rendered_blocks == 50  # one new block per request, the rest reused


def test_blocks_a_compaction_folded_away_are_let_go_at_once() -> None:
    render = IncrementalChat()
    items: list[Item] = []
    for n in range(200):
        items = [
            *items,
            Message(role="user", content=[TextPart(f"q{n}")]),
            Message(role="assistant", content=[TextPart("a")]),
        ]
        if len(items) > 40:  # a compaction: a summary, then the newest ten turns as they were
            items = [Message(role="user", content=[TextPart(f"summary before q{n}")]), *items[-20:]]
        window = Window("sys", None, None, items)
        assert render(window) == render_openai_chat(window)
        # only the live window's blocks are kept (plus none of what was folded), however long the conversation
        assert len(render._blocks) <= 21
