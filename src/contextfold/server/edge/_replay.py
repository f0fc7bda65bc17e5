"""Resuming a stream: `GET /v1/responses/{id}?stream=true&starting_after=N`.

While a response streams, and for a while after, its events are kept in memory on the replica that ran it, so a
client that lost its connection picks up exactly after the last sequence number it saw, live if the turn still
runs. For a stored response no longer (or never) buffered here, the stream is rebuilt from the stored response:
the same item and event order, each text as one delta, numbered from 0 (so `starting_after` counts events of that
rebuilt stream).
"""

from __future__ import annotations

import asyncio
import sys
import zlib
from array import array
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from ..responses._stream import StreamMapper, encode

_FINAL = ("response.completed", "response.incomplete", "response.failed")
_FORGOTTEN = 1_024
"""Ids of streams let go while running, remembered so that a resume is told why it cannot be served."""


class _Buffer:
    """One response's stream as a resuming client gets it: the encoded SSE frames, end to end in one byte string,
    with where each ends and its sequence number. A finished stream is compressed (its frames repeat the same ids
    and field names), so a long answer costs a few times its text, not hundreds."""

    def __init__(self, owner: StreamBuffers, response_id: str) -> None:
        self._owner = owner
        self.id = response_id
        self._frames = bytearray()
        self._packed: bytes | None = None
        self._index = b""
        """A finished stream's `ends` and `seqs`, compressed with its frames."""
        self.ends = array("Q")
        self.seqs = array("q")
        self.changed = asyncio.Event()
        self.done = False
        self.dropped = False
        """Let go while running, to keep the memory bound: followers stop, and resuming is refused."""
        self.size = self._measure()

    def _measure(self) -> int:
        frames = self._frames if self._packed is None else self._packed
        return sys.getsizeof(frames) + sys.getsizeof(self._index) + sys.getsizeof(self.ends) + sys.getsizeof(self.seqs)

    def add(self, event: dict[str, Any]) -> None:
        if self.dropped or self._packed is not None:
            return
        self._frames += encode(event)
        self.ends.append(len(self._frames))
        self.seqs.append(event["sequence_number"])
        self.done = self.done or event["type"] in _FINAL
        self._owner._resized(self)
        self._wake()

    def close(self) -> None:
        """The run ended (its final event is in, or it never will be): followers stop waiting."""
        self.done = True
        if not self.dropped and self._packed is None:
            self._packed = zlib.compress(self._frames, 1)
            self._index = zlib.compress(self.ends.tobytes() + self.seqs.tobytes(), 1)
            self._frames, self.ends, self.seqs = bytearray(), array("Q"), array("q")
            self._owner._resized(self)
        self._wake()

    def drop(self) -> None:
        self.dropped = self.done = True
        self._frames, self._packed, self._index = bytearray(), None, b""
        self.ends, self.seqs = array("Q"), array("q")
        self._wake()

    def contents(self) -> tuple[bytes | bytearray, array[int], array[int]]:
        """The frames end to end, where each ends, and their sequence numbers (a finished stream's, unpacked)."""
        if self._packed is None:
            return self._frames, self.ends, self.seqs
        index = zlib.decompress(self._index)
        ends, seqs = array("Q"), array("q")
        ends.frombytes(index[: len(index) // 2])
        seqs.frombytes(index[len(index) // 2 :])
        return zlib.decompress(self._packed), ends, seqs

    def _wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def _remeasure(self) -> int:
        before, self.size = self.size, self._measure()
        return self.size - before


class StreamBuffers:
    """The streams kept for resuming, within `max_bytes` of memory in all: past it the oldest finished streams are
    let go first, then the running stream that grew (its own client is not affected, only resuming it)."""

    def __init__(self, capacity: int = 256, *, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.bytes = 0
        self._buffers: OrderedDict[str, _Buffer] = OrderedDict()
        self._dropped: OrderedDict[str, None] = OrderedDict()

    def open(self, response_id: str) -> _Buffer:
        buffer = self._buffers[response_id] = _Buffer(self, response_id)
        self.bytes += buffer.size
        while len(self._buffers) > self.capacity:
            oldest = next(iter(self._buffers.values()))
            if not oldest.done:
                break  # never drop a live stream for the count; the cap is exceeded until it ends
            self._forget(next(iter(self._buffers)))
        return buffer

    def has(self, response_id: str) -> bool:
        return response_id in self._buffers

    def dropped(self, response_id: str) -> bool:
        """Whether the stream was let go while it ran (it streamed more than the memory bound holds)."""
        return response_id in self._dropped

    def _resized(self, buffer: _Buffer) -> None:
        grown = buffer._remeasure()
        if self._buffers.get(buffer.id) is not buffer:
            return  # let go already (by the count): it is no longer counted
        self.bytes += grown
        if self.bytes <= self.max_bytes:
            return
        for response_id in [r for r, b in self._buffers.items() if b.done and b is not buffer]:
            self._forget(response_id)
            if self.bytes <= self.max_bytes:
                return
        # still over: the stream that grew goes (a finished one is then rebuilt from its stored response)
        response_id = buffer.id
        self._forget(response_id)
        if not buffer.done:
            self._dropped[response_id] = None
            while len(self._dropped) > _FORGOTTEN:
                self._dropped.popitem(last=False)
        buffer.drop()

    def _forget(self, response_id: str) -> None:
        buffer = self._buffers.pop(response_id)
        self.bytes -= buffer.size

    async def follow(self, response_id: str, starting_after: int) -> AsyncIterator[bytes]:
        """The stream's frames after sequence number `starting_after`, live while it runs."""
        buffer = self._buffers[response_id]
        position = 0
        while True:
            # what is there now: an event added meanwhile extends these, a drop or a close replaces them
            frames, ends, seqs = buffer.contents()
            count = len(ends)
            while position < count:
                start = ends[position - 1] if position else 0
                position += 1
                if seqs[position - 1] > starting_after:
                    yield bytes(frames[start : ends[position - 1]])
                    if buffer.dropped:
                        return
            if buffer.done:
                return
            await buffer.changed.wait()


def rebuilt(response: dict[str, Any], starting_after: int) -> list[dict[str, Any]]:
    """The stream of a finished response, rebuilt from the response object."""
    mapper = StreamMapper()
    in_progress = {**response, "status": "in_progress", "output": [], "usage": None}
    events = mapper.start(in_progress)
    for index, item in enumerate(response["output"]):
        events.append(mapper.event("response.output_item.added", output_index=index, item=_opened(item)))
        if item["type"] == "message":
            for n, part in enumerate(item.get("content") or []):
                common = {"item_id": item["id"], "output_index": index, "content_index": n}
                text = part.get("text", "")
                events.append(mapper.event("response.content_part.added", **common, part={**part, "text": ""}))
                events.append(mapper.event("response.output_text.delta", **common, delta=text, logprobs=[]))
                events.append(mapper.event("response.output_text.done", **common, text=text, logprobs=[]))
                events.append(mapper.event("response.content_part.done", **common, part=part))
        elif item["type"] == "function_call":
            common = {"item_id": item["id"], "output_index": index}
            events.append(mapper.event("response.function_call_arguments.delta", **common, delta=item["arguments"]))
            events.append(
                mapper.event(
                    "response.function_call_arguments.done", **common, name=item["name"], arguments=item["arguments"]
                )
            )
        events.append(mapper.event("response.output_item.done", output_index=index, item=item))
    events += mapper.finish(response)
    return [e for e in events if e["sequence_number"] > starting_after]


def _opened(item: dict[str, Any]) -> dict[str, Any]:
    if item["type"] == "message":
        return {**item, "status": "in_progress", "content": []}
    if item["type"] == "function_call":
        return {**item, "status": "in_progress", "arguments": ""}
    return item
