"""Interleaved measurement: the same request sent to every system in turn, request by request, so that whatever
else loads the machine at that moment falls on all of them alike.

The systems are the upstream alone (`DIRECT`), the floor pass-through (`FLOOR`) and whatever is compared with it.
A system's added time for request n is its latency for n less the upstream's own latency for n (paired), and its
p50/p95 are taken over those differences in a window of requests; the ratio to the floor divides by the floor's
figures in the same window. Each round starts with a different system, so none is always first after the client's
own work.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from ._report import median, ms, percentile
from ._upstream import ANSWER, STALL, STALL_SECONDS

DIRECT = "upstream alone"
FLOOR = "floor"
JSON = {"content-type": "application/json", "authorization": "Bearer sk-bench"}
QUESTION = "why does test {n} fail? {padding}"
PADDING = "the assertion on line 42 compares the parsed config with the default "


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    """Base URL that `/chat/completions` (or the section's path) is appended to."""
    pid: int | None = None


@dataclass
class Run:
    times: dict[str, list[float]]
    sizes: list[int]
    """Bytes of each request's body."""
    broken: dict[str, int]
    """Answers that came back 200 without the upstream's answer text in them, per system."""


def _rotated(targets: Sequence[Target], n: int) -> list[Target]:
    k = n % len(targets)
    return [*targets[k:], *targets[:k]]


async def chat_history(targets: Sequence[Target], count: int, padding: int) -> Run:
    """A client that resends its growing history, `count` streamed Chat Completions requests, each to every target.

    Each request adds a user message (`padding` copies of a sentence) and the echoed answer to the history.
    """
    history: list[dict[str, str]] = [{"role": "system", "content": "You are a careful coding assistant."}]
    run = Run({t.name: [] for t in targets}, [], {t.name: 0 for t in targets})
    clients = {t.name: httpx.AsyncClient(base_url=t.url, timeout=120, headers=JSON) for t in targets}
    try:
        for n in range(count):
            history.append({"role": "user", "content": QUESTION.format(n=n, padding=PADDING * padding)})
            body = json.dumps({"model": "bench", "stream": True, "messages": history}).encode()
            run.sizes.append(len(body))
            for target in _rotated(targets, n):
                started = time.perf_counter()
                async with clients[target.name].stream("POST", "/chat/completions", content=body) as response:
                    data = await response.aread()
                run.times[target.name].append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise RuntimeError(f"{target.name}, request {n}: {response.status_code} {data[:500]!r}")
                run.broken[target.name] += ANSWER.encode() not in data
            history.append({"role": "assistant", "content": ANSWER})
    finally:
        for client in clients.values():
            await client.aclose()
    return run


def size_windows(sizes: Sequence[int], kilobytes: Sequence[int], width: int) -> list[tuple[int, int]]:
    """For each size, the `width` requests centred on the first one whose body reaches it (start, end)."""
    windows = []
    for kb in kilobytes:
        first = next((i for i, size in enumerate(sizes) if size >= kb * 1024), len(sizes) - 1)
        start = max(0, min(first - width // 2, len(sizes) - width))
        windows.append((start, min(start + width, len(sizes))))
    return windows


def requests_for(kilobytes: int, padding: int, width: int) -> int:
    """How many requests a history needs to pass `kilobytes` by half a window (each adds a question and an answer)."""
    per_request = len(QUESTION.format(n=500, padding=PADDING * padding)) + len(ANSWER) + 60  # 60: the JSON around them
    return int(kilobytes * 1024 / per_request) + width


@dataclass(frozen=True)
class Added:
    p50: float
    p95: float
    """Milliseconds over the upstream alone."""


def added(run: Run, name: str, start: int, end: int) -> Added:
    pairs = [a - b for a, b in zip(run.times[name][start:end], run.times[DIRECT][start:end], strict=True)]
    return Added(ms(median(pairs)), ms(percentile(pairs, 0.95)))


def ratio(value: float, floor: float) -> float | None:
    return value / floor if floor > 0 else None


def times_floor(value: float, floor: float) -> str:
    """`2.3x`: a figure as a multiple of the floor's."""
    r = ratio(value, floor)
    return "—" if r is None else f"{r:.1f}x"


async def streams(target: Target) -> float:
    """Seconds until the answer's text reaches the client when the upstream holds the rest of its answer back for
    `STALL_SECONDS` after the first chunk: well under that for a system that streams, past it for one that buffers."""
    body = {
        "model": "bench",
        "stream": True,
        "messages": [{"role": "user", "content": f"{STALL.decode()}: does this answer arrive in pieces?"}],
    }
    async with httpx.AsyncClient(base_url=target.url, timeout=60, headers=JSON) as client:
        started = time.perf_counter()
        seen = b""
        async with client.stream("POST", "/chat/completions", json=body) as response:
            async for chunk in response.aiter_bytes():
                seen += chunk
                if ANSWER.encode() in seen:
                    return time.perf_counter() - started
    return time.perf_counter() - started


def streaming_cell(seconds: float) -> str:
    verdict = "yes" if seconds < STALL_SECONDS / 2 else "no"
    return f"{verdict} ({ms(seconds):.0f} ms of a {ms(STALL_SECONDS):.0f} ms stall)"
