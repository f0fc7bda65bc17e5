"""The stream replay buffer (issue 14, item 8): bounded by bytes in all, kept as encoded frames (compressed once a
stream ends), and resuming still gives exactly the frames after the sequence number asked for. Sizes are measured
(`sys.getsizeof` of what is kept), never time."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from contextfold.server import ServerConfig
from contextfold.server.edge._replay import StreamBuffers
from contextfold.server.responses._stream import StreamMapper, encode

from .server_fixtures import parse_sse, serving


def answer(words: int) -> list[dict[str, Any]]:
    """The events of a streamed answer of `words` text deltas, as the server numbers and shapes them."""
    mapper = StreamMapper()
    response = {"id": "resp_x", "object": "response", "status": "in_progress", "output": []}
    events = mapper.start(response)
    events.append(mapper.event("response.output_item.added", output_index=0, item={"id": "msg_x"}))
    common = {"item_id": "msg_0123456789abcdef", "output_index": 0, "content_index": 0}
    events += [mapper.event("response.output_text.delta", **common, delta=f"w{n} ", logprobs=[]) for n in range(words)]
    events += mapper.finish({**response, "status": "completed"})
    return events


async def followed(buffers: StreamBuffers, response_id: str, after: int) -> bytes:
    return b"".join([frame async for frame in buffers.follow(response_id, after)])


def kept(buffers: StreamBuffers) -> int:
    """What the kept buffers hold, measured afresh."""
    total = 0
    for buffer in buffers._buffers.values():
        frames = buffer._packed if buffer._packed is not None else buffer._frames
        total += sys.getsizeof(frames) + sys.getsizeof(buffer._index)
        total += sys.getsizeof(buffer.ends) + sys.getsizeof(buffer.seqs)
    return total


async def test_a_long_answer_is_kept_compactly_and_resumes_exactly() -> None:
    events = answer(20_000)
    text = sum(len(e.get("delta", "")) for e in events)
    buffers = StreamBuffers()
    buffer = buffers.open("resp_long")
    for event in events:
        buffer.add(event)
    live = buffers.bytes
    buffer.close()
    for after in (-1, 0, 7, len(events) // 2, len(events) - 2, len(events)):
        expected = b"".join(encode(e) for e in events if e["sequence_number"] > after)
        assert await followed(buffers, "resp_long", after) == expected
    assert buffers.bytes == kept(buffers)
    # Encoded, a delta frame is ~150 bytes; finished, compressed, a few bytes over its text.
    assert live < 300 * len(events), live
    assert buffers.bytes < 2 * text, (buffers.bytes, text)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 400), st.booleans()), min_size=1, max_size=40),
    st.integers(20_000, 200_000),
)
def test_the_bound_holds_for_any_streams(streams: list[tuple[int, bool]], bound: int) -> None:
    """Whatever streams run, and whether they end: the kept bytes are what the accounting says, and within the
    bound (finished streams are let go first, then a running one that grows past it)."""

    async def run() -> None:
        buffers = StreamBuffers(max_bytes=bound)
        opened: list[str] = []
        for n, (words, ends) in enumerate(streams):
            response_id = f"resp_{n}"
            buffer = buffers.open(response_id)
            opened.append(response_id)
            for event in answer(words):
                buffer.add(event)
                assert buffers.bytes == kept(buffers)
                assert buffers.bytes <= bound + 256 * len(opened)  # empty buffers opened are counted too
            if ends:
                buffer.close()
            assert buffers.bytes == kept(buffers)
        for response_id in opened:  # what is kept resumes whole; what was let go while running is said so
            if buffers.has(response_id):
                events = answer(streams[int(response_id[5:])][0])
                frames = b"".join(encode(e) for e in events)
                if buffers._buffers[response_id].done:
                    assert await followed(buffers, response_id, -1) == frames

    asyncio.run(run())


async def test_a_stream_too_big_for_the_bound_is_let_go_and_its_resume_refused_by_name(tmp_path: Path) -> None:
    config = ServerConfig(db=str(tmp_path / "s.db"), max_replay_bytes=4_000)
    async with serving(config) as served:
        reply = await served.http.post("/v1/responses", json={"model": "test", "input": "/long 300", "stream": True})
        events = parse_sse(reply.text)
        response_id = events[0]["response"]["id"]
        assert events[-1]["type"] == "response.completed"  # its own client got all of it
        state = served.app.state.server
        assert not state.streams.has(response_id)
        assert state.streams.bytes <= 4_000
        # finished, so resuming is served from the stored response
        resumed = await served.http.get(f"/v1/responses/{response_id}", params={"stream": "true"})
        assert parse_sse(resumed.text)[-1]["type"] == "response.completed"
