"""What the proxy's decoders made of a message's bytes, kept so a resent history is not parsed again.

A client that keeps its own history resends every earlier message on every request, byte for byte as it sent them
before (an SDK serialises the same message the same way). Parsing a message is a pure function of its bytes (the
decoders' per-message result does not depend on the rest of the body), so `_chat_decode` and `_messages_decode`
look each message of the `messages` array up here by its raw JSON bytes and parse only those they have not seen: a
request then costs one pass over its bytes in C (splitting the array, copying and hashing each message) plus Python
work for its new messages only, instead of Python work for every message it ever had. The messages a recent
request ended with are kept together too (`_Runs`): a request that resends them takes them all after one comparison
of the raw messages in C, with no copy, hash or lookup per message.

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
from dataclasses import dataclass
from typing import Generic, TypeVar

import msgspec

V = TypeVar("V")

MAX_BYTES = 64 * 1024 * 1024
"""What the entries are charged at most: their keys (the raw messages) and values (about as large again). The
runs (`_Runs`) hold as much again of recent requests' bodies."""
MAX_RUNS = 1024
LOOKBACK = 16
"""Positions from the end of a request's messages where an earlier request's last message is looked for."""


class Seen(Generic[V]):
    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self._max = max_bytes
        self._bytes = 0
        self._table: OrderedDict[bytes, tuple[V, int]] = OrderedDict()
        self._runs: _Runs[V] = _Runs(max_bytes)

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

    def each(
        self, raws: Sequence[msgspec.Raw], parse: Callable[[bytes, int], tuple[V, bool]], held: int | None = None
    ) -> list[V]:
        """The value of every message in `raws`: the kept one, else `parse(raw, index)`'s (on the message's bytes),
        kept when it says so. The messages an earlier request ended with are taken from its run (`_Runs`), the
        rest looked up one by one (one loop with its lookups bound locally: it runs for every new message).
        `held`: the bytes `raws` keep alive (a `msgspec.Raw` is a view of the body it was decoded from: the body's
        length), what their run is charged; None: their own bytes."""
        runs = self._runs
        run = runs.take(raws)
        start, out, size = (len(run.raws), list(run.values), run.size) if run is not None else (0, [], 0)
        reusable = None  # where the first value that may not be reused at its place is (a final prefill's)
        table = self._table
        get, move = table.get, table.move_to_end
        for index in range(start, len(raws)):
            key = bytes(raws[index])
            found = get(key)
            if found is not None:
                move(key)
                out.append(found[0])
            else:
                value, keep = parse(key, index)
                if keep:
                    self.put(key, len(key), value)
                elif reusable is None:
                    reusable = index
                out.append(value)
            if reusable is None:
                size += len(key)
                last = key
        if reusable is None:
            reusable = len(raws)
        if reusable:
            key = last if reusable > start else bytes(raws[reusable - 1])  # the last reusable message's bytes
            charge = size if held is None else held
            runs.put((reusable - 1, key), _Run(raws[:reusable], out[:reusable], charge))
        return out

    def __len__(self) -> int:
        return len(self._table)

    @property
    def size(self) -> int:
        """What the entries are charged now."""
        return self._bytes


@dataclass(frozen=True, slots=True)
class _Run(Generic[V]):
    raws: Sequence[msgspec.Raw]
    """A request's messages (holding its body's buffer), up to the last one whose value may be reused there."""
    values: list[V]
    size: int
    """What it holds: its request's body (or its messages' bytes, when the caller did not say)."""


class _Runs(Generic[V]):
    """The messages recent requests ended with, and their values: a request that resends one of them (a prefix of
    its `messages` equal to it, byte for byte) takes all their values at once, so its history costs one comparison
    of the raw messages in C (memcmp each) instead of a copy, a hash and a lookup per message.

    A run is found by its last message (its position and bytes) among a request's last `LOOKBACK` positions (a
    client adds the answer and its next message or tool results) and taken only when every message before it is
    equal. A run taken is dropped (the request that took it leaves its own, a step further), so a conversation
    holds about one. A run holds its request's body (the raw messages are views of it): the runs are bounded by
    their messages' bytes and number, least recently used first out. Values taken from a run are not looked up
    in the table: the table's entries for a conversation that goes on age there, and are parsed again only if its
    run is lost (a branch, an eviction), as any message the table no longer holds."""

    def __init__(self, max_bytes: int, max_runs: int = MAX_RUNS) -> None:
        self._max, self._max_runs = max_bytes, max_runs
        self._bytes = 0
        self._table: OrderedDict[tuple[int, bytes], _Run[V]] = OrderedDict()

    def take(self, raws: Sequence[msgspec.Raw]) -> _Run[V] | None:
        table = self._table
        if not table:
            return None
        for at in range(len(raws) - 1, max(len(raws) - 1 - LOOKBACK, -1), -1):
            where = (at, bytes(raws[at]))
            run = table.get(where)
            if run is not None and run.raws == raws[: at + 1]:
                self._drop(where)
                return run
        return None

    def put(self, where: tuple[int, bytes], run: _Run[V]) -> None:
        if run.size > self._max:
            return
        self._drop(where)
        self._table[where] = run
        self._bytes += run.size
        while self._bytes > self._max or len(self._table) > self._max_runs:
            self._bytes -= self._table.popitem(last=False)[1].size

    def _drop(self, where: tuple[int, bytes]) -> None:
        run = self._table.pop(where, None)
        if run is not None:
            self._bytes -= run.size

    def __len__(self) -> int:
        return len(self._table)
