"""The invariants of DESIGN.md section 2, checked in one place against a log and the view folded from it.

`check(log, view, budget)` recomputes from the raw log what must be true of the view (an independent reference,
not the fold's own bookkeeping) and returns one message per violation. Tests run it on every generated log; an
operator can run it on a stored conversation. Invariant 6 (grammar) lives in `_grammar`, invariant 7 (compare-and-
swap on the head) in the stores, and both have their own tests.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..events import Compaction, Deletion, Event, Message, Pin, TextPart, TurnMarker, text_of
from ._fold import View
from ._grammar import validate_items
from ._tokens import SUMMARY_HEADER


def check(log: Sequence[Event], view: View, budget: int | None = None, *, in_turn: bool = False) -> list[str]:
    """Every invariant violation of `view` with respect to `log` (empty when all hold).

    `in_turn` relaxes invariant 1 for a turn in progress, whose newest calls may still await their results.
    """
    problems: list[str] = []
    deleted = {seq for e in log if isinstance(e, Deletion) for seq in e.targets}
    failed = {e.turn_id for e in log if isinstance(e, TurnMarker) and e.status in ("failed", "interrupted", "blocked")}
    window = view.window()

    # 1. Tool calls and results pair up; a parallel batch is all in or all out.
    if not in_turn:
        problems += [f"invariant 1: {p}" for p in validate_items(window.items)]

    # 2. Instructions and pinned items are in the view, verbatim.
    pinned: dict[int, bool] = {}
    for event in log:
        if isinstance(event, Pin):
            pinned[event.target] = event.pinned
    by_seq = {e.seq: e for e in log}
    for event in log:
        must = (isinstance(event, Message) and event.role in ("system", "developer")) or pinned.get(event.seq, False)
        live = event.seq not in deleted and (event.turn_id is None or event.turn_id not in failed)
        if must and live:
            shown = view.items.get(event.seq)
            if shown is None or event.seq in view.masked or text_of(shown) != text_of(by_seq[event.seq]):
                problems.append(f"invariant 2: protected item seq {event.seq} is not in the view verbatim")

    # 3. Failed and interrupted turns stay in the log and out of the view.
    for seq, item in view.items.items():
        if item.turn_id is not None and item.turn_id in failed:
            problems.append(f"invariant 3: seq {seq} belongs to failed turn {item.turn_id} but is in the view")

    # 4. The summary sits after the head and before the verbatim tail and the new input.
    positions = [i for i, item in enumerate(window.items) if _is_summary(item)]
    if len(positions) > 1:
        problems.append(f"invariant 4: {len(positions)} summaries in one view")
    if positions:
        at = positions[0]
        before = [item.seq for item in window.items[:at]]
        after = [item.seq for item in window.items[at + 1 :]]
        split = view.split_seq()
        if any(seq > split for seq in before) or any(seq <= split for seq in after):
            problems.append("invariant 4: the summary is not between the head and the verbatim tail")
        users = [i for i, item in enumerate(window.items) if isinstance(item, Message) and item.role == "user"]
        if users and users[-1] < at and after:
            problems.append("invariant 4: the summary comes after the newest input")

    # 5. The view fits its budget.
    if budget is not None and view.tokens > budget:
        problems.append(f"invariant 5: the view needs ~{view.tokens} tokens, over the {budget}-token budget")

    # 8. Deleted items are out of the view, and so is any summary that covered them.
    for seq in deleted & view.items.keys():
        problems.append(f"invariant 8: deleted seq {seq} is still in the view")
    summary = view.active_summary()
    if summary is not None:
        covered = {s for s in deleted if any(start <= s <= end for start, end in summary.covers)}
        if covered and not _recomputed_after(log, summary, covered):
            problems.append(f"invariant 8: the summary in view covers deleted seqs {sorted(covered)[:5]}")
    return problems


def _is_summary(item: object) -> bool:
    return (
        isinstance(item, Message)
        and item.role == "user"
        and bool(item.content)
        and isinstance(item.content[0], TextPart)
        and item.content[0].text.startswith(SUMMARY_HEADER)
    )


def _recomputed_after(log: Sequence[Event], summary: Compaction, covered: set[int]) -> bool:
    """A summary made after every deletion of `covered` was computed without the deleted content."""
    last_deletion = max(e.seq for e in log if isinstance(e, Deletion) and covered & set(e.targets))
    return summary.seq > last_deletion
