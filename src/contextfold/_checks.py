"""The checks an append passes before it reaches the log: what would break a wire's pairing of calls and results,
or drop what a compaction must keep."""

from __future__ import annotations

from collections.abc import Sequence

from ._errors import InvalidEventError
from .events import Compaction, Event, Message, Pin, ToolCall, ToolResult
from .view import View

KEEP_ROLES = ("system", "developer")
"""Messages every compaction keeps verbatim (with the pinned items)."""


def check_events(view: View, events: Sequence[Event]) -> None:
    """Refuse events that would break the log: a tool call reusing the id of a call in the view (or of an earlier
    call of the same append), a tool result with no unanswered call before it, a pin of an item not in the view,
    a compaction that drops what must stay."""
    answered: set[str] = set()
    issued: set[str] = set()
    in_view = view.calls
    for event in events:
        if isinstance(event, ToolCall):
            if event.call_id in issued or event.call_id in in_view:
                # Every wire pairs results with calls by id: a second call with the id would leave one of the
                # two unanswered (or answered by the other's result), and the grammar repair would drop both.
                raise InvalidEventError(
                    f"tool call id {event.call_id!r} is already the id of another call in the conversation; "
                    "give every tool call its own id"
                )
            issued.add(event.call_id)
        elif isinstance(event, ToolResult):
            if event.call_id in answered or (event.call_id not in issued and in_view.get(event.call_id) is not False):
                raise InvalidEventError(
                    f"tool result for call {event.call_id!r} has no unanswered tool call before it; "
                    "append the call first, and answer each call once"
                )
            answered.add(event.call_id)
        elif isinstance(event, Pin) and event.target not in view.items:
            raise InvalidEventError(f"pin target seq {event.target} is not an item in the view")
        elif isinstance(event, Compaction):
            _check_compaction(view, event)


def _check_compaction(view: View, event: Compaction) -> None:
    held = view.sources()
    kept = set(event.kept)
    if not kept <= held.keys():
        raise InvalidEventError(f"compaction keeps events not in the view: {sorted(kept - held.keys())[:10]}")
    must_keep = view.pinned | {
        seq for seq, item in view.items.items() if isinstance(item, Message) and item.role in KEEP_ROLES
    }
    if not must_keep <= kept:
        raise InvalidEventError(
            f"compaction must keep instructions and pinned items; it drops {sorted(must_keep - kept)[:10]}"
        )
