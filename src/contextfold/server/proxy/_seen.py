"""What the proxy's decoders made of a message's bytes, kept so a resent history is not parsed again.

A client that keeps its own history resends every earlier message on every request, byte for byte as it sent them
before (an SDK serialises the same message the same way). Parsing a message is a pure function of its bytes (the
decoders' per-message result does not depend on the rest of the body), so `_chat_decode` and `_messages_decode`
look each message of the `messages` array up here by a digest of its raw JSON bytes and parse only those they have
not seen: a request then costs one pass over its bytes in C (splitting the array, hashing) plus Python work for its
new messages only, instead of Python work for every message it ever had.

One table for the process, shared by every conversation, least recently used first out, bounded by the bytes of
the messages it describes (`MAX_BYTES`), so its memory is bounded whatever the traffic. The key is a 32-byte
BLAKE2b digest (a collision, which would hand one message's parse to another, is not a practical event), so the
table keeps no copy of the raw bytes; the value holds the parse (about the message's size).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import msgspec

V = TypeVar("V")

MAX_BYTES = 32 * 1024 * 1024
"""Raw message bytes the table describes at most (its values take about as much again)."""


class Seen(Generic[V]):
    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self._max = max_bytes
        self._bytes = 0
        self._table: OrderedDict[bytes, tuple[V, int]] = OrderedDict()

    @staticmethod
    def digest(raw: bytes | memoryview) -> bytes:
        return hashlib.blake2b(raw, digest_size=32).digest()

    def get(self, digest: bytes) -> V | None:
        found = self._table.get(digest)
        if found is None:
            return None
        self._table.move_to_end(digest)
        return found[0]

    def put(self, digest: bytes, size: int, value: V) -> None:
        if size > self._max or digest in self._table:
            return
        self._table[digest] = (value, size)
        self._bytes += size
        while self._bytes > self._max:
            self._bytes -= self._table.popitem(last=False)[1][1]

    def each(self, raws: Sequence[msgspec.Raw], parse: Callable[[msgspec.Raw, int], tuple[V, bool]]) -> list[V]:
        """The value of every message in `raws`: the kept one, else `parse(raw, index)`'s, kept when it says so
        (one loop with its lookups bound locally: it runs for every message of every request)."""
        table, blake2b, out = self._table, hashlib.blake2b, []
        get, move = table.get, table.move_to_end
        for index, raw in enumerate(raws):
            digest = blake2b(raw, digest_size=32).digest()
            found = get(digest)
            if found is not None:
                move(digest)
                out.append(found[0])
                continue
            value, keep = parse(raw, index)
            if keep:
                self.put(digest, len(raw), value)
            out.append(value)
        return out

    def __len__(self) -> int:
        return len(self._table)

    @property
    def size(self) -> int:
        """Raw bytes of the messages described now."""
        return self._bytes
