"""The latency benchmarks' own machinery: the floor is a faithful pass-through, the interleaved driver sends every
request to every system and the windows and paired differences are what the tables say.

No timings asserted here (speed belongs in benchmarks/): only that what the tables compare is the same work.
"""

from __future__ import annotations

import json
import os

import httpx
from benchmarks._interleave import DIRECT, FLOOR, Run, Target, added, chat_history, size_windows
from benchmarks._processes import floor_process, upstream_process
from benchmarks._procstat import cpu_seconds, rss_bytes
from benchmarks._upstream import ANSWER
from hypothesis import given
from hypothesis import strategies as st


async def test_the_floor_passes_every_answer_through_byte_for_byte() -> None:
    bodies = [
        ("/chat/completions", {"model": "bench", "stream": True, "messages": [{"role": "user", "content": "hi"}]}),
        ("/chat/completions", {"model": "bench", "messages": [{"role": "user", "content": "hi"}]}),
        ("/responses", {"model": "bench", "input": "hi"}),
        ("/responses", {"model": "bench", "input": "hi", "stream": True}),
    ]
    with upstream_process() as upstream, floor_process(upstream) as floor:
        async with httpx.AsyncClient(base_url=upstream) as direct, httpx.AsyncClient(base_url=floor.url) as through:
            for path, body in bodies:
                expected = await direct.post(path, json=body)
                got = await through.post("/v1" + path, json=body)
                assert got.status_code == expected.status_code == 200
                assert got.content == expected.content
                assert got.headers["content-type"] == expected.headers["content-type"]
                assert ANSWER in got.text
            assert json.loads((await through.post("/v1/chat/completions", json=bodies[1][1])).content)["choices"]


async def test_every_request_of_the_history_reaches_every_system_whole() -> None:
    with upstream_process() as upstream, floor_process(upstream) as floor:
        targets = [Target(DIRECT, upstream), Target(FLOOR, floor.url + "/v1", floor.pid)]
        run = await chat_history(targets, 12, padding=3)
    assert all(len(times) == 12 for times in run.times.values())
    assert run.broken == {DIRECT: 0, FLOOR: 0}
    assert all(a < b for a, b in zip(run.sizes, run.sizes[1:], strict=False)), "the history grows with every request"


@given(
    st.lists(st.integers(1, 10_000), min_size=1, max_size=300).map(lambda xs: sorted(xs)),
    st.lists(st.integers(1, 12), min_size=1, max_size=3),
    st.integers(1, 50),
)
def test_a_size_window_is_always_whole_and_inside_the_run(sizes: list[int], kbs: list[int], width: int) -> None:
    for start, end in size_windows([s * 100 for s in sizes], kbs, width):
        assert 0 <= start <= end <= len(sizes)
        assert end - start == min(width, len(sizes))


def test_added_time_is_the_paired_difference_with_the_upstream() -> None:
    run = Run({DIRECT: [0.001, 0.002, 0.003], FLOOR: [0.003, 0.004, 0.005]}, [1, 2, 3], {})
    floor = added(run, FLOOR, 0, 3)
    assert round(floor.p50, 6) == round(floor.p95, 6) == 2.0


def test_proc_readings_of_a_live_process() -> None:
    assert cpu_seconds(os.getpid()) > 0
    assert rss_bytes(os.getpid()) > 1_000_000
