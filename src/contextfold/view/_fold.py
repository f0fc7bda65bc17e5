"""The view: the context window as a pure, incremental fold over a conversation's log.

`View.apply(event)` folds one event in. Replaying a log from its first event and loading it from its newest
compaction (a checkpoint) give the same view, because both go through `_restore`: a compaction lists everything the
view still holds, so applying it and loading from it are one operation on different sources of events.

The fold trusts the log; whoever appends (see `Conversation`) checks an event against the view first.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import msgspec
from msgspec import UNSET

from ..events import (
    Compaction,
    ConfigChange,
    Deletion,
    Event,
    Item,
    Message,
    Pin,
    Reasoning,
    SeqRange,
    TextPart,
    ToolCall,
    ToolResult,
    ToolSpec,
    Totals,
    TurnMarker,
    Usage,
)
from ._tokens import ITEM_OVERHEAD, SUMMARY_HEADER, text_tokens, tools_tokens


def masked_output(result: ToolResult) -> str:
    """What a masked tool result shows: the tool's own compact summary, or a pointer to the full output."""
    if result.summary:
        return f"{result.summary}\n[full output folded away; recall or expand event {result.id} to read it]"
    return f"[output folded away to save context; recall or expand event {result.id} to read it]"


def masked_tokens(result: ToolResult) -> int:
    return ITEM_OVERHEAD + text_tokens(masked_output(result))


class Lineage:
    """What windows of one view share between two of its changes that are not appends (a compaction, a masking, a
    pin that unmasks, a deletion, a failed turn, a config change): the items of any two windows with the same
    lineage extend one another (the shorter one's items are the first items of the longer, the very same objects).

    Whoever checks or renders a window keeps its state in `memo` (keyed by itself) and goes on from it over the new
    items only (see `view._scan`, `models._incremental`). The memo lives as long as the lineage: the view starts a
    new one at its next such change, so the old state goes with the windows that still hold it (memory stays flat).
    Its keys are held weakly: a renderer that is dropped (a model evicted from the server's registry) takes its
    state with it.
    """

    __slots__ = ("memo",)

    def __init__(self) -> None:
        self.memo: weakref.WeakKeyDictionary[object, Any] = weakref.WeakKeyDictionary()


@dataclass(frozen=True, slots=True)
class Window:
    """A view ready to render: instructions, tools and items in the order the model reads them."""

    system_prompt: str | None
    tools: list[ToolSpec] | None
    max_output_tokens: int | None
    items: list[Item]
    lineage: Lineage | None = field(default=None, compare=False, repr=False)
    """Set by `View.window`. A window made with other items (say `dataclasses.replace(window, items=...)`) must
    set it to None: it no longer extends the lineage's windows."""


class View:
    """What the model sees of one conversation, kept current one event at a time."""

    __slots__ = (
        "_calls",
        "_fixed_tokens",
        "_item_tokens",
        "_lineage",
        "_masked_out",
        "_summary_out",
        "_window",
        "_window_len",
        "config_events",
        "covers",
        "head",
        "items",
        "masked",
        "max_output_tokens",
        "offset",
        "open_turns",
        "pinned",
        "summary",
        "summary_stale",
        "system_prompt",
        "tools",
        "totals",
    )

    def __init__(self) -> None:
        self.head = 0
        self.items: dict[int, Item] = {}
        self.pinned: set[int] = set()
        self.masked: set[int] = set()
        self.system_prompt: str | None = None
        self.tools: list[ToolSpec] | None = None
        self.max_output_tokens: int | None = None
        self.summary: Compaction | None = None
        self.summary_stale = False
        self.covers: list[SeqRange] = []
        self.offset = 0
        self.open_turns: dict[str, int] = {}
        """Turns started and not yet ended, by id, with the seq of their start (a crash leaves them open)."""
        self.config_events: dict[str, ConfigChange] = {}
        """The config change in force for each setting."""
        self.totals = Totals()
        """Requests and tokens reported by usage events, and compactions, over the whole log."""
        self._item_tokens = 0
        self._fixed_tokens = 0
        # What `window()` reuses: between two non-append changes (`_changed`) a window only grows at its end, so
        # the next one is the last one plus the items added since (O(new), not O(window)); and the objects that
        # stand for a masked result or the summary stay the same while they are unchanged, so the caches
        # downstream (the renderer's blocks, keyed by item identity) still find them after a compaction.
        self._lineage = Lineage()
        self._window: Window | None = None
        self._window_len = 0
        self._masked_out: dict[int, tuple[ToolResult, ToolResult]] = {}
        self._summary_out: tuple[Compaction, Message] | None = None
        self._calls: dict[str, bool] | None = {}
        """The view's tool calls by id, in order, each with whether a result in the view answers it: kept up as
        items are appended, rebuilt on demand after any other change (None)."""

    def __copy__(self) -> View:
        """A copy sharing the containers (as `copy.copy` would), with a lineage and caches of its own: the copy may
        change apart from this view (see `Conversation.snapshot`), so no window of one extends a window of the
        other."""
        copied = View.__new__(View)
        for name in View.__slots__:
            setattr(copied, name, getattr(self, name))
        copied._masked_out = dict(self._masked_out)
        copied._changed()
        return copied

    def _changed(self) -> None:
        """Something other than an append changed the window: the next one is built whole, in a new lineage."""
        self._lineage = Lineage()
        self._window = None
        self._calls = None

    @property
    def calls(self) -> Mapping[str, bool]:
        """The tool calls in the view by id (in order), each with whether it is answered: what a turn must answer
        and what ids are taken, without a scan of the window on every request."""
        if self._calls is None:
            calls: dict[str, bool] = {}
            for item in self.items.values():
                _track(calls, item)
            self._calls = calls
        return self._calls

    # --- building ---------------------------------------------------------------------------------------------

    @classmethod
    def replay(cls, events: Iterable[Event]) -> View:
        view = cls()
        for event in events:
            view.apply(event)
        return view

    @classmethod
    def from_checkpoint(
        cls,
        compaction: Compaction,
        kept: Mapping[int, Event],
        summary_holder: Compaction | None,
        after: Iterable[Event],
    ) -> View:
        """The view after `compaction`, from the events it kept, then the events that follow it."""
        view = cls()
        view.head = compaction.seq - 1
        view._restore(compaction, kept, summary_holder)
        for event in after:
            view.apply(event)
        return view

    def apply(self, event: Event) -> None:
        """Fold one event in. Events must arrive in sequence order."""
        if event.seq != self.head + 1:
            raise ValueError(f"event seq {event.seq} does not follow view head {self.head}")
        self.head = event.seq
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)

    def _add_item(self, event: Any) -> None:
        self.items[event.seq] = event
        self._item_tokens += event.tokens
        if self._calls is not None:
            _track(self._calls, event)

    def _turn(self, event: Any) -> None:
        marker: TurnMarker = event
        turn_id = marker.turn_id or ""
        if marker.status == "started":
            self.open_turns[turn_id] = marker.seq
            return
        start = self.open_turns.pop(turn_id, None)
        if marker.status in ("failed", "interrupted", "blocked"):
            self._drop(self._items_of_turn(turn_id, start))
            self.offset = 0

    def _items_of_turn(self, turn_id: str, start: int | None) -> list[int]:
        """Seqs of the turn's items in view; from the end back to its start when that is known (no full scan)."""
        if start is None:
            return [seq for seq, item in self.items.items() if item.turn_id == turn_id]
        found = []
        for seq in reversed(self.items):
            if seq < start:
                break
            if self.items[seq].turn_id == turn_id:
                found.append(seq)
        return found

    def _config(self, event: Any) -> None:
        change: ConfigChange = event
        if change.system_prompt is not UNSET:
            self.system_prompt = change.system_prompt
            self.config_events["system_prompt"] = change
        if change.tools is not UNSET:
            self.tools = change.tools
            self.config_events["tools"] = change
        if change.system_prompt is not UNSET or change.tools is not UNSET:
            prompt = ITEM_OVERHEAD + text_tokens(self.system_prompt) if self.system_prompt else 0
            self._fixed_tokens = prompt + tools_tokens(self.tools)
        if change.max_output_tokens is not UNSET:
            self.max_output_tokens = change.max_output_tokens
            self.config_events["max_output_tokens"] = change
        self._changed()  # the window's instructions, tools or output cap

    def _pin(self, event: Any) -> None:
        pin: Pin = event
        if pin.target in self.items:
            if pin.pinned:
                self.pinned.add(pin.target)
                if pin.target in self.masked:  # pinned items are shown verbatim
                    item = self.items[pin.target]
                    self._item_tokens -= self._cost(pin.target, item)
                    self.masked.discard(pin.target)
                    self._masked_out.pop(pin.target, None)
                    self._item_tokens += item.tokens
                    self._changed()  # only an unmasking changes the window; the pin set itself is not in it
            else:
                self.pinned.discard(pin.target)

    def _delete(self, event: Any) -> None:
        deletion: Deletion = event
        self._drop(seq for seq in deletion.targets if seq in self.items)
        if self.summary is not None and (
            self.summary.seq in deletion.erased_summaries or self.summary.seq in deletion.targets
        ):
            self.summary_stale = True
            self._changed()
        self.offset = 0

    def _usage(self, event: Any) -> None:
        usage: Usage = event
        if usage.estimated_input_tokens is not None:
            self.offset = usage.input_tokens - usage.estimated_input_tokens
        t = self.totals
        self.totals = Totals(
            t.requests + 1,
            t.input_tokens + usage.input_tokens,
            t.output_tokens + usage.output_tokens,
            t.cached_input_tokens + usage.cached_input_tokens,
            t.compactions,
        )

    def _compact(self, event: Any) -> None:
        compaction: Compaction = event
        self._restore(compaction, self.sources(), self.summary)

    def sources(self) -> dict[int, Event]:
        """The events the view holds (items and config in force), by seq."""
        held: dict[int, Event] = dict(self.items)
        for change in self.config_events.values():
            held[change.seq] = change
        return held

    def _drop(self, seqs: Iterable[int]) -> None:
        for seq in list(seqs):
            self._item_tokens -= self._cost(seq, self.items.pop(seq))
            self.pinned.discard(seq)
            self.masked.discard(seq)
            self._masked_out.pop(seq, None)
            self._changed()

    def _cost(self, seq: int, item: Item) -> int:
        """Tokens an item takes in the view: its placeholder's when masked."""
        if seq in self.masked and isinstance(item, ToolResult):
            return masked_tokens(item)
        return item.tokens

    def _restore(self, compaction: Compaction, source: Mapping[int, Event], summary_holder: Compaction | None) -> None:
        """Make the view exactly what `compaction` says it is, taking the events it kept from `source`."""
        configs: list[ConfigChange] = []
        items: dict[int, Item] = {}
        for seq in compaction.kept:
            event = source.get(seq)
            if isinstance(event, ConfigChange):
                configs.append(event)
            elif isinstance(event, (Message, ToolCall, ToolResult, Reasoning)):
                items[seq] = event
        previous = self.summary
        stale_before = self.summary_stale
        self.items = items
        self.pinned = {seq for seq in compaction.pinned if seq in items}
        self.masked = {seq for seq in compaction.masked if seq in items and isinstance(items[seq], ToolResult)}
        self.system_prompt, self.tools, self.max_output_tokens = None, None, None
        self._fixed_tokens = 0
        self.config_events = {}
        for change in configs:
            self._config(change)
        if compaction.strategy == "mask":
            holder = summary_holder if summary_holder and summary_holder.seq == compaction.summary_seq else None
        elif compaction.strategy == "clear":
            holder = None
        else:
            holder = compaction
        self.summary = holder
        self.summary_stale = holder is not None and (
            holder.redacted or (holder is previous and stale_before) or not holder.summary
        )
        self.covers = list(compaction.covers)
        self.open_turns = dict(compaction.open_turns)
        self.offset = 0
        totals = compaction.totals or Totals()
        self.totals = msgspec.structs.replace(totals, compactions=totals.compactions + 1)
        self._item_tokens = sum(self._cost(seq, item) for seq, item in items.items())
        self.head = compaction.seq
        # Masked results still masked keep the objects that show them (a new masking adds to them).
        self._masked_out = {seq: out for seq, out in self._masked_out.items() if seq in self.masked}
        self._changed()

    # --- reading ----------------------------------------------------------------------------------------------

    @property
    def tokens(self) -> int:
        """Estimated input tokens of this view, corrected by the provider's last report."""
        return self.estimated_tokens + self.offset

    @property
    def estimated_tokens(self) -> int:
        summary = self.summary.tokens if self.summary is not None and not self.summary_stale else 0
        return self._item_tokens + summary + self.fixed_tokens

    @property
    def fixed_tokens(self) -> int:
        """Tokens of the configuration in force: the system prompt and the tool schemas."""
        return self._fixed_tokens

    @property
    def kept_seqs(self) -> list[int]:
        """The earlier events a compaction made now must keep: items in view and config in force."""
        return sorted({*self.items, *(change.seq for change in self.config_events.values())})

    def active_summary(self) -> Compaction | None:
        return None if self.summary is None or self.summary_stale else self.summary

    def split_seq(self) -> int:
        """Items up to this seq sit before the summary (head and pins); later ones after it."""
        return max((end for _, end in self.covers), default=0)

    def item_output(self, seq: int) -> Item:
        """The item as the model sees it (a masked tool result shows its placeholder, one object while masked)."""
        item = self.items[seq]
        if seq in self.masked and isinstance(item, ToolResult):
            held = self._masked_out.get(seq)
            if held is None or held[0] is not item:
                held = self._masked_out[seq] = (item, _with_output(item, masked_output(item)))
            return held[1]
        return item

    def window(self) -> Window:
        """The view as an ordered list of items, the summary placed between the head and the tail.

        Between non-append changes this is the previous window plus the items added since: new items always go
        at the end (their seqs are past the summary's split), so only they are looked at. The list is copied, not
        extended in place, because an earlier window must keep its items (a C-level copy of pointers)."""
        count = len(self.items)
        last = self._window
        if last is not None and self._window_len <= count:
            if self._window_len == count:
                return last
            added = [self.item_output(seq) for seq in islice(reversed(self.items), count - self._window_len)]
            added.reverse()
            items = [*last.items, *added]
        else:
            summary = self.active_summary()
            items = [self.item_output(seq) for seq in self.items]
            if summary is not None:
                split = self.split_seq()
                at = next((n for n, item in enumerate(items) if item.seq > split), len(items))
                held = self._summary_out
                if held is None or held[0] is not summary:
                    held = self._summary_out = (summary, summary_message(summary))
                items.insert(at, held[1])
        window = Window(self.system_prompt, self.tools, self.max_output_tokens, items, self._lineage)
        self._window, self._window_len = window, count
        return window

    def state(self) -> dict[str, Any]:
        """Everything observable about the view, for comparing two views."""
        summary = self.active_summary()
        return {
            "head": self.head,
            "items": [(seq, item.id, seq in self.masked) for seq, item in self.items.items()],
            "pinned": sorted(self.pinned),
            "config": (
                self.system_prompt,
                self.tools,
                self.max_output_tokens,
                sorted((name, change.seq) for name, change in self.config_events.items()),
            ),
            "summary": None if summary is None else (summary.seq, summary.summary),
            "carried": [] if summary is None else list(summary.carried),
            "stale": self.summary_stale,
            "covers": self.covers,
            "open_turns": sorted(self.open_turns.items()),
            "totals": self.totals,
            "tokens": self.tokens,
        }


def summary_message(compaction: Compaction) -> Message:
    return Message(
        id=compaction.id,
        conversation_id=compaction.conversation_id,
        seq=compaction.seq,
        created_at=compaction.created_at,
        role="user",
        content=[TextPart(SUMMARY_HEADER + (compaction.summary or ""))],
        tokens=compaction.tokens,
    )


def _with_output(result: ToolResult, output: str) -> ToolResult:
    return msgspec.structs.replace(result, output=output, tokens=masked_tokens(result))


_HANDLERS: dict[type[Event], Callable[[View, Event], None]] = {
    Message: View._add_item,
    ToolCall: View._add_item,
    ToolResult: View._add_item,
    Reasoning: View._add_item,
    TurnMarker: View._turn,
    ConfigChange: View._config,
    Pin: View._pin,
    Deletion: View._delete,
    Usage: View._usage,
    Compaction: View._compact,
}


def _track(calls: dict[str, bool], item: Item) -> None:
    if isinstance(item, ToolCall):
        calls[item.call_id] = False
    elif isinstance(item, ToolResult) and item.call_id in calls:
        calls[item.call_id] = True
