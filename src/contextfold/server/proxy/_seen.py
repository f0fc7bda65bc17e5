"""What the proxy's decoders made of a message's bytes, kept so a resent history is not parsed again.

A client that keeps its own history resends every earlier message on every request, byte for byte as it sent them
before (an SDK serialises the same message the same way). Parsing a message is a pure function of its bytes (the
decoders' per-message result does not depend on the rest of the body), so `_chat_decode` and `_messages_decode`
look each message of the `messages` array up here by its raw JSON bytes and parse only those they have not seen: a
request then costs one pass over its bytes in C (splitting the array, copying and hashing each message) plus Python
work for its new messages only, instead of Python work for every message it ever had.

The key is the raw bytes themselves: Python hashes bytes in C and a hit compares them with memcmp, three to four
times cheaper than a BLAKE2b digest of each message (which needed its own object, call and digest per message), and
no collision can hand one message's parse to another. Being checked when first parsed is part of what a kept
message stands for: the decoders refuse a message holding a lone surrogate before it is kept (`check_piece`), so a
message found here needs no check again.

One table for the process, shared by every conversation, least recently used first out, bounded by the bytes it
holds (`MAX_BYTES`: each entry is charged its key's bytes and the caller's estimate of its value's), so its memory
is bounded whatever the traffic.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import msgspec

V = TypeVar("V")

MAX_BYTES = 64 * 1024 * 1024
"""What the entries are charged at most: their keys (the raw messages) and values (about as large again)."""


class Seen(Generic[V]):
    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self._max = max_bytes
        self._bytes = 0
        self._table: OrderedDict[bytes, tuple[V, int]] = OrderedDict()

    def get(self, key: bytes) -> V | None:
        found = self._table.get(key)
        if found is None:
            return None
        self._table.move_to_end(key)
        return found[0]

    def put(self, key: bytes, size: int, value: V) -> None:
        """Keep `value` for `key` (`size`: about what the value holds; the key's own bytes are charged too)."""
        charge = len(key) + size
        if charge > self._max or key in self._table:
            return
        self._table[key] = (value, charge)
        self._bytes += charge
        while self._bytes > self._max:
            self._bytes -= self._table.popitem(last=False)[1][1]

    def each(self, raws: Sequence[msgspec.Raw], parse: Callable[[bytes, int], tuple[V, bool]]) -> list[V]:
        """The value of every message in `raws`: the kept one, else `parse(raw, index)`'s (on the message's bytes),
        kept when it says so (one loop with its lookups bound locally: it runs for every message of every
        request)."""
        table, out = self._table, []
        get, move = table.get, table.move_to_end
        for index, raw in enumerate(raws):
            key = bytes(raw)
            found = get(key)
            if found is not None:
                move(key)
                out.append(found[0])
                continue
            value, keep = parse(key, index)
            if keep:
                self.put(key, len(key), value)
            out.append(value)
        return out

    def __len__(self) -> int:
        return len(self._table)

    @property
    def size(self) -> int:
        """What the entries are charged now."""
        return self._bytes
