"""Chat Completions rendering (and its grammar check) that reuses what is unchanged since the last request.

Between compactions a conversation's window only grows at its end, yet every request rendered all of it: at 400
items rendering was most of what the lean path still cost. The window is cut into blocks, each starting at a
non-assistant message with text (and the first item); such a message is never merged into what precedes it and
ends any batch of calls before it, so the renderer's state is fresh there, and rendering block by block gives the
very messages a whole render gives.

Two ways to find what is unchanged:
- **Going on** (the common case): a window of the same lineage as the last one rendered for it (`Window.lineage`,
  set by the view: its windows extend one another until a compaction, a masking, a pin, a deletion or a config
  change) whose items still hold that window's last item where it was. Then everything before the last block is
  unchanged, so only the items from the last block's start are looked at and rendered: O(new items), not
  O(window). The Chat grammar scan (`violations`) goes on the same way, from its state before the last block.
- **Walking** (anything else: the first window of a lineage, say after a compaction): every item is looked at, and
  a block is found again by the identity of its items (events are frozen, and the view hands the same objects from
  one window to the next, a masked result and the summary included), so only new blocks and those a compaction or
  a masking changed are rendered.

One model serves many conversations at once, so the blocks are kept in one least-recently-used table of
`MAX_BLOCKS`, shared by them: bounded, whatever the traffic. Blocks a compaction folded away are dropped at once
rather than aged out: a window that goes on from an earlier one (it shares a block with it) lets go of the earlier
window's blocks it no longer holds, so a long conversation keeps only its live window's blocks, not the 2,048 most
recent it ever had (40 MB over 2,000 turns of a benchmark). What going on keeps (`_Run`) lives in the lineage's
memo, so it goes when the view moves to its next lineage.
"""

from __future__ import annotations

from collections import OrderedDict

from ..events import Item, Message, TextPart
from ..view import Window
from ..view._render import Payload, render_openai_chat
from ..view._scan import ChatScan

MAX_BLOCKS = 2048
"""Blocks kept (a block is one user turn's messages, so this is a few thousand turns over all conversations)."""

Key = tuple[int, ...]


def _opens_block(item: Item) -> bool:
    return (
        isinstance(item, Message)
        and item.role != "assistant"
        and any(isinstance(part, TextPart) and part.text for part in item.content)
    )


class _Run:
    """What the last window of one lineage rendered: enough to go on from it over the items after it."""

    __slots__ = ("count", "head", "keys", "last", "scan", "scan_offset", "start", "tail")

    def __init__(self, items: list[Item], keys: list[Key], head: list[Payload], start: int, tail: list[Payload]):
        self.count = len(items)
        self.last = items[-1] if items else None
        self.keys = keys
        """Its blocks' keys; the very list `_window_of` maps each of them to (so it is changed in place)."""
        self.head = head
        """The messages of every block but the last: what the next window of the lineage renders the same."""
        self.start = start
        """Where the last block starts in the items (it may grow, so it is rendered again)."""
        self.tail = tail
        self.scan: ChatScan | None = None
        """The grammar scan over the system message (if any) and `head`."""
        self.scan_offset = 0


class IncrementalChat:
    """`render_openai_chat`, reusing the rendered messages of what is unchanged since the previous window."""

    def __init__(self) -> None:
        self._blocks: OrderedDict[Key, tuple[list[Item], list[Payload]]] = OrderedDict()
        self._window_of: dict[Key, list[Key]] = {}
        """The block keys of the newest window each cached block was part of (how the next window finds it)."""
        self._fresh: tuple[list[Payload], _Run, int] | None = None
        """The messages just returned, their run and the system message count (for `violations` right after)."""
        self.rendered_blocks = 0
        """Blocks rendered afresh so far (what could not be reused), for tests and profiles."""
        self.looked_at = 0
        """Items looked at so far (walked over or gone on from), for tests and profiles."""
        self.scanned = 0
        """Messages the grammar check scanned so far, for tests and profiles."""

    def __call__(self, window: Window) -> list[Payload]:
        items = window.items
        lineage = window.lineage
        run = lineage.memo.get(self) if lineage is not None else None
        if (
            isinstance(run, _Run)
            and 0 < run.count <= len(items)
            and items[run.count - 1] is run.last
            and run.start < run.count
        ):
            self._go_on(run, items)
        else:
            run = self._walk(items)
            if lineage is not None:
                lineage.memo[self] = run
        system: list[Payload] = [{"role": "system", "content": window.system_prompt}] if window.system_prompt else []
        out = [*system, *run.head, *run.tail]  # a new list (the caller may change it): a copy of pointers
        self._fresh = (out, run, len(system))
        return out

    def violations(self, messages: list[Payload]) -> list[str]:
        """`validate_openai_chat(messages)`; for the messages this renderer just returned, scanning only what is
        new since the lineage's last check (the scan before the last block is kept, the rest scanned on a fork)."""
        fresh, self._fresh = self._fresh, None
        if fresh is None or fresh[0] is not messages:
            self.scanned += len(messages)
            return ChatScan().feed(messages).finish()
        _, run, offset = fresh
        stable = offset + len(run.head)
        scan = run.scan
        if scan is None or run.scan_offset != offset or scan.count > stable:
            scan = run.scan = ChatScan()
            run.scan_offset = offset
        self.scanned += len(messages) - scan.count
        scan.feed(messages, stable)
        return scan.fork().feed(messages).finish()

    def _block(self, items: list[Item], start: int, end: int) -> tuple[Key, list[Payload]]:
        block = items[start:end]
        key = tuple(map(id, block))
        found = self._blocks.get(key)
        if found is None:
            found = (block, render_openai_chat(Window(None, None, None, block)))  # the items keep ids alive
            self.rendered_blocks += 1
            self._blocks[key] = found
            if len(self._blocks) > MAX_BLOCKS:
                self._window_of.pop(self._blocks.popitem(last=False)[0], None)
        else:
            self._blocks.move_to_end(key)
        return key, found[1]

    def _walk(self, items: list[Item]) -> _Run:
        self.looked_at += len(items)
        if not items:
            return _Run(items, [], [], 0, [])
        starts = [0, *(n for n in range(1, len(items)) if _opens_block(items[n]))]
        keys: list[Key] = []
        head: list[Payload] = []
        tail: list[Payload] = []
        for start, end in zip(starts, [*starts[1:], len(items)], strict=True):
            key, messages = self._block(items, start, end)
            keys.append(key)
            head.extend(tail)
            tail = messages
        self._forget_folded(keys)
        return _Run(items, keys, head, starts[-1], tail)

    def _go_on(self, run: _Run, items: list[Item]) -> None:
        """Extend `run` over `items`, which go on from its window: only the items from its last block are read."""
        count = len(items)
        if count == run.count:
            return
        self.looked_at += count - run.count
        # The last block holds no opening item after its first (else it would not be the last): new blocks can
        # only start among the new items.
        starts = [run.start, *(n for n in range(run.count, count) if _opens_block(items[n]))]
        keys: list[Key] = []
        rendered: list[list[Payload]] = []
        for start, end in zip(starts, [*starts[1:], count], strict=True):
            if start == run.start and end == run.count:  # the last block, unchanged: a new block follows it
                key, messages = run.keys[-1], run.tail
            else:
                key, messages = self._block(items, start, end)
            keys.append(key)
            rendered.append(messages)
        grown = run.keys[-1]
        if keys[0] != grown:  # the last block grew: its earlier rendering is in no live window now
            self._blocks.pop(grown, None)
            self._window_of.pop(grown, None)
        run.keys[-1:] = keys
        for key in keys:
            self._window_of[key] = run.keys
        for messages in rendered[:-1]:
            run.head.extend(messages)
        run.tail = rendered[-1]
        run.start, run.count, run.last = starts[-1], count, items[-1]

    def _forget_folded(self, keys: list[Key]) -> None:
        """Drop the blocks of the windows this one goes on from that it no longer holds (folded away)."""
        live = set(keys)
        earlier = {id(window): window for key in keys if (window := self._window_of.get(key)) is not None}
        for window in earlier.values():
            for gone in window:
                if gone not in live:
                    self._blocks.pop(gone, None)
                    self._window_of.pop(gone, None)
        for key in keys:
            self._window_of[key] = keys
