"""Resuming a stream: `GET /v1/responses/{id}?stream=true&starting_after=N`.

While a response streams, and for a while after, its events are kept in memory on the replica that ran it, so a
client that lost its connection picks up exactly after the last sequence number it saw, live if the turn still
runs. For a stored response no longer (or never) buffered here, the stream is rebuilt from the stored response:
the same item and event order, each text as one delta, numbered from 0 (so `starting_after` counts events of that
rebuilt stream).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from ._stream import StreamMapper

_FINAL = ("response.completed", "response.incomplete", "response.failed")


class _Buffer:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self.done = False

    def add(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.done = self.done or event["type"] in _FINAL
        self.changed.set()
        self.changed = asyncio.Event()

    def close(self) -> None:
        """The run ended (its final event is in, or it never will be): followers stop waiting."""
        self.done = True
        self.changed.set()


class StreamBuffers:
    def __init__(self, capacity: int = 256) -> None:
        self.capacity = capacity
        self._buffers: OrderedDict[str, _Buffer] = OrderedDict()

    def open(self, response_id: str) -> _Buffer:
        buffer = self._buffers[response_id] = _Buffer()
        while len(self._buffers) > self.capacity:
            oldest, kept = next(iter(self._buffers.items()))
            if not kept.done:
                break  # never drop a live stream; the cap is exceeded until it ends
            self._buffers.pop(oldest)
        return buffer

    def has(self, response_id: str) -> bool:
        return response_id in self._buffers

    async def follow(self, response_id: str, starting_after: int) -> AsyncIterator[dict[str, Any]]:
        buffer = self._buffers[response_id]
        position = 0
        while True:
            while position < len(buffer.events):
                event = buffer.events[position]
                position += 1
                if event["sequence_number"] > starting_after:
                    yield event
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
