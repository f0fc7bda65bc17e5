"""Chat Completions rendering that reuses what is unchanged since the last request.

Between compactions a conversation's window only grows at its end, yet every request rendered all of it: at 400
items rendering was most of what the lean path still cost. The window is cut into blocks, each starting at a
non-assistant message with text (and the first item); such a message is never merged into what precedes it and
ends any batch of calls before it, so the renderer's state is fresh there, and rendering block by block gives the
very messages a whole render gives. A block is found again by the identity of its items (events are frozen, and
the view hands the same objects from one window to the next), so a request renders only new blocks and those a
compaction or a masking changed. One model serves many conversations at once, so the blocks are kept in one
least-recently-used table of `MAX_BLOCKS`, shared by them: bounded, whatever the traffic. Blocks a compaction
folded away are dropped at once rather than aged out: a window that goes on from an earlier one (it shares a
block with it) lets go of the earlier window's blocks it no longer holds, so a long conversation keeps only
its live window's blocks, not the 2,048 most recent it ever had (40 MB over 2,000 turns of a benchmark).
"""

from __future__ import annotations

from collections import OrderedDict

from ..events import Item, Message, TextPart
from ..view import Window
from ..view._render import Payload, render_openai_chat

MAX_BLOCKS = 2048
"""Blocks kept (a block is one user turn's messages, so this is a few thousand turns over all conversations)."""


def _opens_block(item: Item) -> bool:
    return (
        isinstance(item, Message)
        and item.role != "assistant"
        and any(isinstance(part, TextPart) and part.text for part in item.content)
    )


class IncrementalChat:
    """`render_openai_chat`, reusing the rendered messages of blocks seen in the previous window."""

    def __init__(self) -> None:
        self._blocks: OrderedDict[tuple[int, ...], tuple[list[Item], list[Payload]]] = OrderedDict()
        self._window_of: dict[tuple[int, ...], list[tuple[int, ...]]] = {}
        """The block keys of the newest window each cached block was part of (how the next window finds it)."""
        self.rendered_blocks = 0
        """Blocks rendered afresh so far (what the cache could not reuse), for tests and profiles."""

    def __call__(self, window: Window) -> list[Payload]:
        out: list[Payload] = [{"role": "system", "content": window.system_prompt}] if window.system_prompt else []
        items = window.items
        start = 0
        keys: list[tuple[int, ...]] = []
        for end in range(1, len(items) + 1):
            if end < len(items) and not _opens_block(items[end]):
                continue
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
            keys.append(key)
            out.extend(found[1])
            start = end
        self._forget_folded(keys)
        return out

    def _forget_folded(self, keys: list[tuple[int, ...]]) -> None:
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
