"""The send path costs O(new items): `View.window`, the Chat render and the send check go on from the last window
of a lineage, and always give exactly what a whole rebuild, a whole render and a full scan give.

Sequences of log changes (appends, tool-call batches split across requests, maskings, summaries, pins, deletions,
failed turns, config changes, broken windows that need repair) are folded into a live view; after each one the
window is compared with one rebuilt from the log, its incremental render with `render_openai_chat`, and its
incremental violations with the scans as they were before they were made resumable (`_reference_scans`).
"""

from __future__ import annotations

import dataclasses
import gc
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contextfold._errors import GrammarError
from contextfold.compaction._state import _scan_identifiers, identifiers
from contextfold.events import (
    Compaction,
    ConfigChange,
    Deletion,
    Event,
    Message,
    Pin,
    Reasoning,
    TextPart,
    ToolCall,
    ToolResult,
    ToolSpec,
    TurnMarker,
    assistant,
    user,
)
from contextfold.models._incremental import IncrementalChat
from contextfold.models._rendered import Rendered
from contextfold.view import View, Window
from contextfold.view._grammar import send_check, validate_items, validate_openai_chat
from contextfold.view._render import render_openai_chat
from contextfold.view._scan import ItemScan, window_item_violations

from ._reference_scans import reference_chat, reference_items

_OPS = [
    "user",
    "user",
    "empty-user",
    "assistant",
    "calls",
    "calls",
    "results",
    "results",
    "reasoning",
    "mask",
    "summary",
    "pin",
    "pin-masked",
    "delete",
    "erase-summary",
    "config",
    "failed-turn",
    "orphan-result",
    "reused-call-id",
]
_ops = st.lists(st.tuples(st.sampled_from(_OPS), st.integers(0, 30), st.booleans()), min_size=1, max_size=45)


class _Log:
    """A log built op by op, folded into a live view as it grows."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.view = View()
        self.pending: list[ToolCall] = []
        self.calls = 0

    def add(self, event: Event) -> None:
        event = msgspec.structs.replace(event, seq=len(self.events) + 1, tokens=10)
        self.events.append(event)
        self.view.apply(event)

    def op(self, kind: str, n: int, flag: bool) -> None:
        view = self.view
        seqs = list(view.items)
        if kind == "user":
            self.add(user(f"question {n}"))
        elif kind == "empty-user":  # no text: it does not open a block
            self.add(Message(role="user", content=[TextPart("")]))
        elif kind == "assistant":
            self.add(assistant(f"answer {n}", turn_id="t"))
        elif kind in ("calls", "reused-call-id"):
            batch = f"b{len(self.events)}"
            for k in range(1 + n % 3):
                self.calls += 1
                reuse = kind == "reused-call-id" and self.calls > 1 and k == 0
                call_id = f"c{self.calls - 1 if reuse else self.calls}"
                call = ToolCall(call_id=call_id, name="f", arguments="{}", batch_id=batch, turn_id="t")
                self.add(call)
                self.pending.append(call)
        elif kind == "results":  # the results of the open calls, maybe out of order, maybe one missing
            calls, self.pending = self.pending, []
            if flag:
                calls.reverse()
            if n % 5 == 0:
                calls = calls[1:]
            for call in calls:
                self.add(ToolResult(call_id=call.call_id, output=f"out {n}", summary="s" if flag else None))
        elif kind == "orphan-result":
            self.add(ToolResult(call_id=f"nobody{n}", output="?"))
        elif kind == "reasoning":
            self.add(Reasoning(provider="openai", data={"id": f"r{n}"}))
        elif kind == "mask":
            results = [s for s in seqs if isinstance(view.items[s], ToolResult)]
            active = view.active_summary()
            masked = sorted({*view.masked, *results[: n % 4 + 1]} - view.pinned)
            self.add(
                Compaction(
                    strategy="mask",
                    trigger="auto",
                    kept=view.kept_seqs,
                    pinned=sorted(view.pinned),
                    masked=masked,
                    covers=list(view.covers),
                    summary_seq=active.seq if active else None,
                )
            )
        elif kind == "summary" and len(seqs) > 2:
            start = 1 if flag else 0
            folded = set(seqs[start : start + 1 + n % len(seqs)]) - view.pinned
            if folded:
                self.add(
                    Compaction(
                        strategy="summary",
                        trigger="auto",
                        kept=[s for s in view.kept_seqs if s not in folded],
                        pinned=sorted(view.pinned),
                        masked=sorted(view.masked - folded),
                        folded=[(min(folded), max(folded))],
                        covers=[*view.covers, (min(folded), max(folded))],
                        summary=f"summary {n}",
                    )
                )
        elif kind == "pin" and seqs:
            self.add(Pin(target=seqs[n % len(seqs)], pinned=flag))
        elif kind == "pin-masked" and view.masked:  # shown verbatim again
            self.add(Pin(target=sorted(view.masked)[n % len(view.masked)], pinned=True))
        elif kind == "delete" and seqs:
            self.add(Deletion(targets=[seqs[n % len(seqs)]]))
        elif kind == "erase-summary" and view.summary is not None:
            self.add(Deletion(targets=[], erased_summaries=[view.summary.seq]))
        elif kind == "config":
            self.add(ConfigChange(system_prompt=[None, "Be brief.", "Be kind."][n % 3]))
        elif kind == "failed-turn":
            self.add(TurnMarker(status="started", turn_id=f"f{n}"))
            self.add(user("doomed", turn_id=f"f{n}"))
            self.add(TurnMarker(status="failed", turn_id=f"f{n}"))


def _full_send_check(window: Window) -> Window | list[str]:
    """`send_check` with the whole-window scans (no lineage): the repaired window, or what still breaks it."""
    plain = dataclasses.replace(window, lineage=None)
    try:
        return send_check(plain, lambda w: validate_openai_chat(render_openai_chat(w)), "p")
    except GrammarError as error:
        return [str(error)]


def _calls_scanned(view: View) -> dict[str, bool]:
    """The view's calls and whether a result follows each (what `View.calls` keeps up), from its items: a call
    whose id is reused is the later call, and a result before its call answers nothing."""
    order = [i for i in view.items.values() if isinstance(i, (ToolCall, ToolResult))]
    return {
        item.call_id: any(isinstance(r, ToolResult) and r.call_id == item.call_id for r in order[k + 1 :])
        for k, item in enumerate(order)
        if isinstance(item, ToolCall)
    }


@settings(max_examples=400, deadline=None)
@given(ops=_ops, tools=st.booleans())
def test_the_incremental_send_path_equals_a_whole_rebuild_render_and_scan(
    ops: list[tuple[str, int, bool]], tools: bool
) -> None:
    log = _Log()
    chat = IncrementalChat()
    rendered = Rendered(chat)
    for kind, n, flag in ops:
        log.op(kind, n, flag)
        window = log.view.window()
        assert window == View.replay(log.events).window()
        assert dict(log.view.calls) == _calls_scanned(log.view)  # kept up by appends, rebuilt after the rest
        if tools and n % 2:  # as the runtime adds its built-in tools: same items, same lineage
            window = dataclasses.replace(window, tools=[ToolSpec(name="recall")])
        whole = render_openai_chat(window)
        messages = chat(window)
        assert messages == whole
        assert chat.violations(messages) == reference_chat(whole)
        assert window_item_violations(window) == reference_items(window.items)
        # The send check itself, incremental and (when the window is broken) through its repair.
        expected = _full_send_check(window)
        try:
            sent: Window | list[str] = send_check(window, lambda w: rendered.check(w, chat.violations), "p")
        except GrammarError as error:
            sent = [str(error)]
        assert sent == expected
        if isinstance(sent, Window):
            assert rendered.take(sent) == render_openai_chat(sent)


@settings(max_examples=300, deadline=None)
@given(items=st.lists(st.sampled_from(range(6)), max_size=30), cut=st.integers(0, 30))
def test_a_resumed_scan_reports_what_a_full_scan_reports(items: list[int], cut: int) -> None:
    """Fed in two parts (the second maybe after a finish), the pairing scan equals the reference on the whole."""
    pool: list[Any] = [
        user("q"),
        assistant("a"),
        ToolCall(call_id="c1", name="f", arguments="{}", batch_id="b1"),
        ToolCall(call_id="c2", name="f", arguments="{}", batch_id="b1"),
        ToolResult(call_id="c1", output="x"),
        ToolResult(call_id="c2", output="y"),
    ]
    window = [msgspec.structs.replace(pool[k], seq=n + 1) for n, k in enumerate(items)]
    scan = ItemScan().feed(window[:cut])
    assert scan.finish() == reference_items(window[:cut])
    assert scan.feed(window, min(cut, len(window))).finish() == reference_items(window)
    assert validate_items(window) == reference_items(window)


def _grow(view_log: _Log, turns: int, chat: IncrementalChat) -> None:
    for n in range(turns):
        view_log.op("user", n, False)
        view_log.op("calls", 0, False)  # one call, answered in the next request: a tool run split in two
        window = view_log.view.window()
        chat.violations(chat(window))
        window_item_violations(window)
        view_log.op("results", 1, False)
        view_log.op("assistant", n, False)
        window = view_log.view.window()
        chat.violations(chat(window))
        window_item_violations(window)


def test_a_growing_window_renders_and_scans_only_its_new_items() -> None:
    log, chat = _Log(), IncrementalChat()
    _grow(log, 100, chat)
    items = len(log.view.window().items)
    assert items == 400
    # Each request looks at its new items only: 400 in all over 200 requests (a whole walk each time: 40,000).
    assert chat.looked_at == items
    # One block per turn, rendered again once when its tool run and answer arrive (a whole render: 200 x 100).
    assert chat.rendered_blocks == 200
    # The grammar scan: each message once, plus the last block (a few messages) again on each request.
    assert chat.scanned <= 4 * items
    lineage = log.view.window().lineage
    assert lineage is not None
    scan = lineage.memo[next(k for k, v in lineage.memo.items() if isinstance(v, ItemScan))]
    assert scan.fed == items  # the pairing scan: each item exactly once


def test_a_compaction_starts_a_new_lineage_and_keeps_unchanged_objects() -> None:
    log, chat = _Log(), IncrementalChat()
    _grow(log, 10, chat)
    before = log.view.window()
    assert log.view.window() is before  # nothing new: the very same window
    log.op("mask", 3, False)
    masked = log.view.window()
    assert masked.lineage is not before.lineage
    log.op("user", 99, False)
    grown = log.view.window()
    assert grown.lineage is masked.lineage
    assert grown.items[: len(masked.items)] == masked.items
    shown = [item for item in grown.items if isinstance(item, ToolResult) and item.output.startswith("[")]
    assert shown
    assert all(any(s is o for o in masked.items) for s in shown)  # one object per masked result
    log.op("summary", 4, True)
    log.op("user", 100, False)
    summarised = log.view.window()
    assert summarised == View.replay(log.events).window()
    summary = log.view.active_summary()
    assert summary is not None
    message = next(item for item in summarised.items if item.seq == summary.seq)
    log.op("mask", 0, False)  # a masking keeps the summary: its message stays the same object
    again = log.view.window()
    assert again.lineage is not summarised.lineage
    assert any(item is message for item in again.items)


def test_a_window_with_other_items_never_goes_on_from_its_lineage() -> None:
    """`repair` and any `replace(..., items=...)` that sets the lineage to None render and scan afresh."""
    log, chat = _Log(), IncrementalChat()
    _grow(log, 3, chat)
    log.op("orphan-result", 1, False)
    window = log.view.window()
    repaired = send_check(window, lambda w: validate_openai_chat(render_openai_chat(w)), "p")
    assert repaired.lineage is None
    assert chat(repaired) == render_openai_chat(repaired)
    with pytest.raises(GrammarError):
        send_check(
            dataclasses.replace(window, lineage=None),
            lambda w: ["always broken"],
            "p",
        )


def test_a_lineage_holds_no_renderer_alive() -> None:
    log = _Log()
    _grow(log, 2, IncrementalChat())  # the renderer is dropped once this returns
    lineage = log.view.window().lineage
    assert lineage is not None
    gc.collect()
    assert not any(isinstance(key, IncrementalChat) for key in lineage.memo)


def test_identifiers_are_cached_by_text_and_handed_out_as_new_lists() -> None:
    text = "deploy v2.3.1 from src/app.py to db_primary at https://example.com/x"
    first = identifiers(text)
    first.append("changed by a caller")
    assert identifiers(text) == list(_scan_identifiers(text))
    assert "src/app.py" in identifiers(text)
    assert "changed by a caller" not in identifiers(text)
    long = text + " filler" * 5000  # past the cached size: scanned each time, the same answer
    assert identifiers(long) == identifiers(text)
