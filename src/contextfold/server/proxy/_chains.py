"""Where recent histories' chains ended, so that a resent history hashes only what it added (`History`).

A client that keeps its own history resends it whole on every request, and the chain key (`_proxy_match`) hashes
the canonical key of every message: at a 400 KB history that is 400 KB through BLAKE2b per request, the most of
what matching costs once parsing is cached (`_seen`). The chain is a pure function of the instructions and the
keys, so the running digest at the end of one request's history is the running digest at that position of every
later history that starts with the same keys: it is kept here, and a later history picks it up (a copy) and feeds
only the keys after it.

A kept end is found by where it ended (the instructions, the position and the key there), looked for at the last
`LOOKBACK` positions of a new history (a client adds the answer and its next message or tool results), and taken
only when every key before it is equal (a list comparison in C: the same objects, when the decoders kept them, cost
a pointer comparison each), so the digests are the ones hashing from the start gives, whatever the table holds. The
links (the chain at assistant positions) read off before the end are kept with it. An end taken is dropped (the
history that took it keeps its own end, a step further), so a conversation holds about one entry; the table is
least recently used first out and bounded by the key bytes its entries hold (`MAX_BYTES`) and their number.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

MAX_BYTES = 32 * 1024 * 1024
"""Key bytes the kept ends refer to at most (counted per entry: histories that share keys count them again)."""
MAX_ENDS = 4096
LOOKBACK = 16
"""Positions from the end of a history where an earlier history's end is looked for."""


@dataclass(frozen=True, slots=True)
class End:
    keys: list[bytes]
    """The keys the digest has been fed (after the instructions)."""
    running: Any
    """The running BLAKE2b digest after them: never updated in place (a taker copies it)."""
    links: dict[int, bytes]
    """The chain at the assistant positions read off on the way."""
    size: int


class Ends:
    def __init__(self, max_bytes: int = MAX_BYTES, max_ends: int = MAX_ENDS) -> None:
        self._max, self._max_ends = max_bytes, max_ends
        self._bytes = 0
        self._table: OrderedDict[tuple[bytes, int, bytes], End] = OrderedDict()

    def take(self, system: bytes, keys: list[bytes]) -> End | None:
        """The kept end of the longest earlier history that `keys` (with the instructions `system`) extends, dropped
        from the table; None when there is none among the last `LOOKBACK` positions."""
        table = self._table
        for at in range(len(keys) - 1, max(len(keys) - 1 - LOOKBACK, -1), -1):
            where = (system, at, keys[at])
            end = table.get(where)
            if end is not None and end.keys == keys[: at + 1]:
                self._drop(where)
                return end
        return None

    def put(self, system: bytes, keys: list[bytes], running: Any, links: dict[int, bytes]) -> None:
        if not keys:
            return
        size = len(system) + sum(map(len, keys))
        if size > self._max:
            return
        where = (system, len(keys) - 1, keys[-1])
        self._drop(where)
        self._table[where] = End(keys, running, links, size)
        self._bytes += size
        while self._bytes > self._max or len(self._table) > self._max_ends:
            self._bytes -= self._table.popitem(last=False)[1].size

    def _drop(self, where: tuple[bytes, int, bytes]) -> None:
        end = self._table.pop(where, None)
        if end is not None:
            self._bytes -= end.size

    def __len__(self) -> int:
        return len(self._table)

    @property
    def size(self) -> int:
        return self._bytes
