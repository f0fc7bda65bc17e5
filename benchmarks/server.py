"""`server`: the time `contextfold serve` adds to a turn, and turns per second with 64 concurrent conversations.

A real server process (`python -m contextfold serve`) forwards to a zero-latency fake OpenAI-compatible upstream on
loopback (it answers every Chat Completions request at once, streamed). The client posts non-streaming
`/v1/responses` turns with httpx. The added time of a turn is its latency through contextfold less the median
latency of the same upstream request sent directly; it includes the server's HTTP, the store, the fold, the
compaction checks and the upstream SDK call.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from ._report import Table, median, ms, percentile
from ._stores import RESULTS, Context, progress

CONCURRENT = 64
WINDOW = 32_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def upstream_process() -> Iterator[str]:
    """The zero-latency fake upstream, in its own process."""
    port = _free_port()
    root = str(Path(__file__).resolve().parents[1])
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._upstream", str(port)], cwd=root, stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        process.stdout.readline()  # "ready"
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def serve_process(db: str, upstream: str, *flags: str) -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    command = [sys.executable, "-m", "contextfold", "serve", "--port", str(port), "--db", db]
    command += ["--upstream", upstream, "--model", "bench", "--context-window", str(WINDOW), "--log-level", "warning"]
    command += flags
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(400):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            raise RuntimeError(f"server did not start: {process.stderr.read().decode() if process.stderr else ''}")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


async def _direct(upstream: str, n: int) -> list[float]:
    """The upstream alone: the same kind of request, straight from the client."""
    body = {"model": "bench", "stream": True, "messages": [{"role": "user", "content": "why does test 1 fail?"}]}
    times = []
    async with httpx.AsyncClient(base_url=upstream) as client:
        for _ in range(n):
            started = time.perf_counter()
            async with client.stream("POST", "/chat/completions", json=body) as response:
                async for _chunk in response.aiter_bytes():
                    pass
            times.append(time.perf_counter() - started)
    return times


async def _one_conversation(url: str, turns: int) -> list[float]:
    times = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        conversation = (await client.post("/v1/conversations", json={})).json()["id"]
        for n in range(turns):
            body = {"model": "bench", "conversation": conversation, "input": f"why does test {n} fail? " + "x" * 200}
            started = time.perf_counter()
            response = await client.post("/v1/responses", json=body)
            times.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(f"turn {n}: {response.status_code} {response.text}")
    return times


async def _concurrent(url: str, turns_each: int) -> float:
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=CONCURRENT)) as client:
        ids = [(await client.post("/v1/conversations", json={})).json()["id"] for _ in range(CONCURRENT)]

        async def drive(conversation: str) -> None:
            for n in range(turns_each):
                body = {"model": "bench", "conversation": conversation, "input": f"turn {n}: what next?"}
                response = await client.post("/v1/responses", json=body)
                if response.status_code != 200:
                    raise RuntimeError(f"{response.status_code} {response.text}")

        started = time.perf_counter()
        await asyncio.gather(*(drive(c) for c in ids))
        return time.perf_counter() - started


def _window(times: list[float], start: int, size: int = 100) -> list[float]:
    return times[start : start + size]


async def run(ctx: Context) -> list[Table]:
    turns = 300 if ctx.quick else 2_000
    turns_each = 3 if ctx.quick else 10
    added = Table(
        f"Server: time added to a non-streaming turn, one conversation of {turns:,} turns (target ≤ 3 ms p50)",
        ["store", "turns", "through contextfold p50 ms", "p95 ms", "upstream direct p50 ms", "added p50 ms"],
    )
    rate = Table(
        f"Server: {CONCURRENT} concurrent conversations, {turns_each} turns each",
        ["store", "turns", "wall s", "turns/s"],
    )
    with upstream_process() as upstream:
        direct = median(await _direct(upstream, 200))
        for name in ("SQLite", "PostgreSQL"):
            progress(f"server: {name}")
            if name == "SQLite":
                for leftover in RESULTS.glob("server.db*"):
                    leftover.unlink()
                db = str(RESULTS / "server.db")
            else:
                db = ctx.pg.database()
            try:
                with serve_process(db, upstream) as url:
                    times = await _one_conversation(url, turns)
                    spans = [(0, "1-100")]
                    spans += [(turns // 2, f"{turns // 2 + 1:,}-{turns // 2 + 100:,}")]
                    spans += [(turns - 100, f"{turns - 99:,}-{turns:,}")]
                    for start, label in spans:
                        part = _window(times, start)
                        p50 = median(part)
                        added.add(
                            name,
                            label,
                            round(ms(p50), 2),
                            round(ms(percentile(part, 0.95)), 2),
                            round(ms(direct), 2),
                            round(ms(p50 - direct), 2),
                        )
                    wall = await _concurrent(url, turns_each)
                    total = CONCURRENT * turns_each
                    rate.add(name, total, round(wall, 2), round(total / wall, 1))
            finally:
                if name == "PostgreSQL":
                    ctx.pg.drop(db)
    added.notes.append(
        f"Each turn: one user message (~60 tokens) and the answer; a {WINDOW:,}-token window, so the conversation "
        "compacts as it grows and each upstream request stays bounded."
    )
    return [added, rate]
