"""The payload the send check rendered, handed to the request that follows, so a window is rendered once per send.

The runtime asks an adapter for `violations(window)` right before it streams that same window (invariant 6, see
`view._grammar.send_check`). Rendering is most of the check's cost (a few ms for a window of a thousand items), so
the adapter keeps what it rendered and its request takes it, once, when it is for the very same window object.
Anything else (another turn's window meanwhile, a retry, a caller that never checked) renders afresh: the cache
only saves work, it never changes what is sent. Single-use also means an adapter may change the payload it took.
`validate` runs right after the render, so a renderer that keeps state per window lineage can check only what is
new (the Chat adapter passes `IncrementalChat.violations`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from ..view import Window

P = TypeVar("P")


class Rendered(Generic[P]):
    def __init__(self, render: Callable[[Window], P]) -> None:
        self._render = render
        self._last: tuple[Window, P] | None = None

    def check(self, window: Window, validate: Callable[[P], list[str]]) -> list[str]:
        """Render `window`, keep the payload for the request that follows, and validate it."""
        payload = self._render(window)
        self._last = (window, payload)
        return validate(payload)

    def take(self, window: Window) -> P:
        """The payload for `window`: the one just checked if it is for this window object, else a fresh render."""
        last, self._last = self._last, None
        if last is not None and last[0] is window:
            return last[1]
        return self._render(window)
