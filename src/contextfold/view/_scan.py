"""The two left-to-right grammar scans of the send check, resumable: state after a prefix, fed more, then finished.

`validate_items` (tool-call pairing, invariant 1) and `validate_openai_chat` (the Chat Completions grammar) are
these scans run over a whole sequence (`_grammar`), so a resumed scan and a full one are one code path and report
the very same violations. Between compactions a window only grows at its end (DESIGN.md), so the send check keeps
a scan's state with the window's lineage (`Window.lineage`: windows sharing one extend one another) and feeds it
only the new items; whatever breaks that (another lineage, a shorter window, a different last item) scans afresh.

`finish()` never changes the scan: the end-of-window checks (calls still unanswered) are computed on the side, so
the same state goes on with the next window. `fork()` gives a scan to feed messages that may still change (the
rendered last block, which the next request renders again), sharing the large id set read-only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..events import Item, ToolCall, ToolResult
from ._fold import Window


class ItemScan:
    """`validate_items` over the items fed so far: calls answered once, after them; batches contiguous and
    answered before anything else comes."""

    __slots__ = (
        "answered",
        "batches",
        "calls",
        "count",
        "fed",
        "last",
        "open",
        "open_batch",
        "out",
        "pending",
        "reported",
    )

    def __init__(self) -> None:
        self.out: list[str] = []
        self.calls: dict[str, ToolCall] = {}
        self.open: dict[str, int] = {}
        """Calls neither answered nor reported yet, with their place in `calls` (the end check reports them in
        that order): kept as the scan goes so finishing costs O(open calls), not O(calls)."""
        self.answered: set[str] = set()
        self.reported: set[str] = set()
        self.batches: set[str] = set()
        self.open_batch: str | None = None
        self.pending: list[str] = []  # unanswered calls of the open batch
        self.last: Item | None = None
        self.count = 0
        self.fed = 0
        """Items scanned over this scan's life (what tests and profiles read: each item of a lineage once)."""

    def feed(self, items: Sequence[Item], start: int = 0) -> ItemScan:
        out, calls, answered, pending = self.out, self.calls, self.answered, self.pending
        last = self.last
        for index in range(start, len(items)):
            item = items[index]
            if isinstance(item, ToolResult):
                if item.call_id not in calls:
                    out.append(
                        f"tool result seq {item.seq} answers call_id {item.call_id!r}, which has no earlier call"
                    )
                elif item.call_id in answered:
                    out.append(f"call_id {item.call_id!r} is answered twice (again by seq {item.seq})")
                else:
                    answered.add(item.call_id)
                    self.open.pop(item.call_id, None)
                    if item.call_id in pending:
                        pending.remove(item.call_id)
            else:
                continuing = (
                    isinstance(item, ToolCall) and isinstance(last, ToolCall) and last.batch_id == item.batch_id
                )
                if pending and not continuing:
                    out.append(
                        f"batch {self.open_batch!r} is not fully answered before seq {item.seq}: "
                        f"calls {pending} have no result yet"
                    )
                    self.reported.update(pending)
                    for cid in pending:
                        self.open.pop(cid, None)
                    pending = self.pending = []
                if isinstance(item, ToolCall):
                    if item.call_id in calls:
                        out.append(f"call_id {item.call_id!r} is used by two calls (again at seq {item.seq})")
                    else:  # a new id is in neither `answered` nor `reported` (both hold only ids of calls)
                        self.open[item.call_id] = len(calls)
                    calls[item.call_id] = item
                    if not continuing:
                        if item.batch_id in self.batches:
                            out.append(f"calls of batch {item.batch_id!r} are not contiguous (seq {item.seq})")
                        self.batches.add(item.batch_id)
                        self.open_batch = item.batch_id
                    pending.append(item.call_id)
            last = item
        self.last = last
        self.fed += len(items) - start
        self.count = len(items)
        return self

    def finish(self) -> list[str]:
        """The violations of the items fed so far, as if they were the whole window (the scan is unchanged)."""
        ends = sorted(self.open, key=self.open.__getitem__)
        return [*self.out, *(f"tool call {cid!r} (seq {self.calls[cid].seq}) has no result" for cid in ends)]


class ChatScan:
    """`validate_openai_chat` over the messages fed so far."""

    __slots__ = ("calls", "calls_at", "closed", "count", "extra", "ids", "in_run", "out")

    def __init__(self) -> None:
        self.out: list[str] = []
        self.ids: set[str] = set()
        self.extra: set[str] | None = None
        """Ids seen by a fork (`ids` is then its parent's, read-only)."""
        self.calls: dict[str, bool] = {}  # tool_call ids of the closest assistant message with tool_calls -> answered
        self.calls_at = -1
        self.closed = True  # whether that message's unanswered calls were already reported
        self.in_run = False  # the previous message is that assistant message or one of its tool messages
        self.count = 0

    def fork(self) -> ChatScan:
        """A scan that goes on from this one and leaves it as it is (O(its last assistant message's calls))."""
        child = ChatScan()
        child.out = list(self.out)
        child.ids = self.ids
        child.extra = set(self.extra or ())
        child.calls = dict(self.calls)
        child.calls_at, child.closed, child.in_run, child.count = self.calls_at, self.closed, self.in_run, self.count
        return child

    def feed(self, messages: Sequence[Mapping[str, Any]], stop: int | None = None) -> ChatScan:
        """Scan `messages[self.count:stop]` (the messages before `count` are the ones already fed)."""
        out, ids, extra = self.out, self.ids, self.extra
        end = len(messages) if stop is None else stop
        for i in range(self.count, end):
            message = messages[i]
            role = message.get("role")
            if role == "tool":
                cid = message.get("tool_call_id")
                if self.calls_at < 0:
                    out.append(f"messages[{i}]: tool message {cid!r} has no earlier assistant message with tool_calls")
                elif cid not in self.calls:
                    out.append(
                        f"messages[{i}]: tool message {cid!r} answers no tool_call of the closest preceding "
                        f"assistant message with tool_calls (messages[{self.calls_at}])"
                    )
                elif self.calls[cid]:
                    out.append(f"messages[{i}]: tool_call {cid!r} is answered twice")
                else:
                    self.calls[cid] = True
                if self.calls_at >= 0 and not self.in_run:
                    out.append(f"messages[{i}]: tool message {cid!r} does not directly follow its assistant message")
                continue
            if role not in ("system", "developer", "user", "assistant"):
                out.append(f"messages[{i}]: unknown role {role!r}")
            if not self.closed:
                _report_unanswered(out, self.calls, self.calls_at, f"before messages[{i}]")
                self.closed = True
            self.in_run = False
            tool_calls = message.get("tool_calls")
            if role == "assistant" and tool_calls:
                self.calls = {}
                for call in tool_calls:
                    cid = call.get("id")
                    if cid in ids or (extra is not None and cid in extra):
                        out.append(f"messages[{i}]: tool_call id {cid!r} is used twice")
                    (ids if extra is None else extra).add(cid)
                    self.calls[cid] = False
                self.calls_at, self.closed, self.in_run = i, False, True
            elif role == "assistant" and not message.get("content"):
                out.append(f"messages[{i}]: assistant message has neither content nor tool_calls")
        self.count = end
        return self

    def finish(self) -> list[str]:
        """The violations of the messages fed so far, as if they were all the messages (the scan is unchanged)."""
        out = list(self.out)
        if not self.closed:
            _report_unanswered(out, self.calls, self.calls_at, "at the end of the messages")
        return out


def _report_unanswered(out: list[str], calls: Mapping[str, bool], at: int, where: str) -> None:
    missing = [cid for cid, done in calls.items() if not done]
    if missing:
        out.append(f"messages[{at}]: tool_calls {missing} are not answered by tool messages {where}")


class _Key:
    """A key a lineage's memo can hold weakly (a bare `object()` cannot be)."""


_ITEMS = _Key()
"""The key of the pairing scan in a lineage's memo."""


def window_item_violations(window: Window) -> list[str]:
    """`validate_items(window.items)`, fed only the items new since the last window of the same lineage."""
    items = window.items
    lineage = window.lineage
    if lineage is None:
        return ItemScan().feed(items).finish()
    scan = lineage.memo.get(_ITEMS)
    if not (
        isinstance(scan, ItemScan)
        and scan.count <= len(items)
        and (scan.count == 0 or items[scan.count - 1] is scan.last)
    ):
        scan = ItemScan()
        lineage.memo[_ITEMS] = scan
    return scan.feed(items, scan.count).finish()
