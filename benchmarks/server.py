"""`server`: the time `contextfold serve` adds to a Responses turn beside the floor, the CPU it spends per turn with
64 concurrent conversations, and whether latency and resident memory stay flat from turn 1 to turn 2,000.

Real server processes (`python -m contextfold serve`, one on SQLite, one on PostgreSQL) and the floor pass-through
(`_floor.py`) stand in front of a zero-latency fake OpenAI-compatible upstream (its own process). The client posts
non-streaming `/v1/responses` turns with httpx: to contextfold on one conversation each, to the floor the same body
(which it forwards to the upstream's Responses endpoint), and to the upstream alone, each turn to every system in
turn (`_interleave.py`). A system's added time is its latency less the upstream's for the same turn. CPU seconds
and resident memory are read from each server's /proc entry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import httpx

from ._interleave import DIRECT, FLOOR, JSON, Run, Target, added, times_floor
from ._processes import WINDOW, floor_process, serving, upstream_process
from ._procstat import cpu_seconds, rss_bytes
from ._report import Table
from ._stores import RESULTS, Context, progress

CONCURRENT = 64
P50_TARGET = 1.6
CPU_TARGET = 1.6
SYSTEMS = ("contextfold (SQLite)", "contextfold (PostgreSQL)")


def _body(text: str, conversation: str | None) -> dict[str, str]:
    body = {"model": "bench", "input": text}
    return {**body, "conversation": conversation} if conversation else body


async def _post(client: httpx.AsyncClient, body: dict[str, str], name: str) -> None:
    try:
        response = await client.post("/responses", json=body)
    except (httpx.ReadError, httpx.RemoteProtocolError):
        # A kept-alive connection the server closed while it sat idle (uvicorn closes them after 5 s, and the
        # concurrent rounds leave each system's connections idle while the others run): send again, as clients do.
        response = await client.post("/responses", json=body)
    if response.status_code != 200:
        raise RuntimeError(f"{name}: {response.status_code} {response.text[:500]}")


async def _conversation(client: httpx.AsyncClient) -> str:
    response = await client.post("/conversations", json={})
    response.raise_for_status()
    conversation: str = response.json()["id"]
    return conversation


async def _one_conversation(
    targets: Sequence[Target], turns: int, every: int
) -> tuple[Run, dict[str, list[tuple[int, int]]]]:
    """`turns` turns, each to every target; resident memory of each server process every `every` turns."""
    clients = {t.name: httpx.AsyncClient(base_url=t.url, timeout=120, headers=JSON) for t in targets}
    run = Run({t.name: [] for t in targets}, [], {t.name: 0 for t in targets})
    memory: dict[str, list[tuple[int, int]]] = {t.name: [] for t in targets if t.pid}
    try:
        conversations = {t.name: await _conversation(clients[t.name]) for t in targets if t.name in SYSTEMS}
        for n in range(turns):
            text = f"why does test {n} fail? " + "x" * 200
            k = n % len(targets)
            for target in [*targets[k:], *targets[:k]]:
                body = _body(text, conversations.get(target.name))
                started = time.perf_counter()
                await _post(clients[target.name], body, f"{target.name}, turn {n}")
                run.times[target.name].append(time.perf_counter() - started)
            if (n + 1) % every == 0 or n == 0:
                for target in targets:
                    if target.pid:
                        memory[target.name].append((n + 1, rss_bytes(target.pid)))
    finally:
        for client in clients.values():
            await client.aclose()
    return run, memory


async def _concurrent(targets: Sequence[Target], turns_each: int) -> dict[str, tuple[float, float]]:
    """`CONCURRENT` conversations taking `turns_each` turns each, round by round alternating the systems: per system
    (wall seconds, server CPU seconds)."""
    limits = httpx.Limits(max_connections=CONCURRENT)
    clients = {t.name: httpx.AsyncClient(base_url=t.url, timeout=120, limits=limits, headers=JSON) for t in targets}
    spent = {t.name: (0.0, 0.0) for t in targets}
    try:
        conversations: dict[str, list[str | None]] = {}
        for t in targets:
            ids = [await _conversation(clients[t.name]) for _ in range(CONCURRENT)] if t.name in SYSTEMS else []
            conversations[t.name] = list(ids) or [None] * CONCURRENT
        for n in range(turns_each):
            k = n % len(targets)
            for target in [*targets[k:], *targets[:k]]:
                assert target.pid is not None
                client, name = clients[target.name], target.name
                cpu, started = cpu_seconds(target.pid), time.perf_counter()
                await asyncio.gather(
                    *(_post(client, _body(f"turn {n}: what next?", c), name) for c in conversations[name])
                )
                wall, used = time.perf_counter() - started, cpu_seconds(target.pid) - cpu
                spent[name] = (spent[name][0] + wall, spent[name][1] + used)
    finally:
        for client in clients.values():
            await client.aclose()
    return spent


def _added_table(run: Run, turns: int) -> Table:
    table = Table(
        f"Server: time added to a non-streaming Responses turn beside the floor, one conversation of {turns:,} turns",
        [
            "system",
            "turns",
            "added p50 ms",
            "added p95 ms",
            "x floor p50",
            "x floor p95",
            f"target (p50 ≤ {P50_TARGET:g}x floor)",
            "p50 vs turns 1-100 (flat)",
        ],
    )
    spans = [(0, 100), (turns // 2, turns // 2 + 100), (turns - 100, turns)]
    for name in (FLOOR, *SYSTEMS):
        first = added(run, name, 0, 100).p50
        for start, end in spans:
            mine, floor = added(run, name, start, end), added(run, FLOOR, start, end)
            goal = "—" if name == FLOOR else f"{'✓' if mine.p50 <= P50_TARGET * floor.p50 else '✗'}"
            table.add(
                name,
                f"{start + 1:,}-{end:,}",
                round(mine.p50, 2),
                round(mine.p95, 2),
                times_floor(mine.p50, floor.p50),
                times_floor(mine.p95, floor.p95),
                goal,
                f"{mine.p50 / first:.2f}x" if first > 0 else "—",
            )
    table.notes.append(
        f"Each turn: one user message (~60 tokens) and the upstream's answer; contextfold runs with a {WINDOW:,}-token "
        "window, so the conversation compacts as it grows and each upstream request stays bounded. The floor forwards "
        "the same body to the upstream's own Responses endpoint. 'Added' = a turn's latency less the upstream's for "
        "the same turn, sent directly in the same round."
    )
    return table


def _memory_table(memory: dict[str, list[tuple[int, int]]]) -> Table:
    table = Table(
        "Server: resident memory over the same conversation (RSS from /proc)",
        ["system", "after turn", "RSS MB", "at the end", "RSS MB at the end", "growth MB", "target"],
    )
    for name, samples in memory.items():
        (turn, start), (last, end) = samples[min(1, len(samples) - 1)], samples[-1]
        growth = (end - start) / 2**20
        goal = "—" if name == FLOOR else f"flat (≤ 3 MB) {'✓' if growth <= 3 else '✗'}"
        table.add(name, turn, round(start / 2**20, 1), last, round(end / 2**20, 1), round(growth, 1), goal)
    table.notes.append("Measured from the first sample after warm-up (the second one) to the last.")
    return table


def _cpu_table(spent: dict[str, tuple[float, float]], turns: int) -> Table:
    table = Table(
        f"Server: {CONCURRENT} concurrent conversations, {turns:,} turns each system, server CPU per turn",
        ["system", "turns", "wall s", "turns/s", "server CPU ms/turn", "x floor", f"target (≤ {CPU_TARGET:g}x)"],
    )
    floor_cpu = spent[FLOOR][1] / turns
    for name, (wall, cpu) in spent.items():
        per = cpu / turns
        goal = "—" if name == FLOOR else f"{'✓' if per <= CPU_TARGET * floor_cpu else '✗'}"
        table.add(
            name, turns, round(wall, 2), round(turns / wall, 1), round(per * 1000, 2), times_floor(per, floor_cpu), goal
        )
    table.notes.append(
        "Rounds of 64 turns at once, the systems taking turns round by round. CPU is the server process's user + "
        "system time (all its threads), from /proc/PID/stat, over its rounds."
    )
    return table


async def run(ctx: Context) -> list[Table]:
    turns = 300 if ctx.quick else 2_000
    turns_each = 3 if ctx.quick else 10
    for leftover in RESULTS.glob("server.db*"):
        leftover.unlink()
    pg = ctx.pg.database()
    try:
        with (
            upstream_process() as upstream,
            floor_process(upstream) as floor,
            serving(str(RESULTS / "server.db"), upstream) as sqlite,
            serving(pg, upstream) as postgres,
        ):
            single = [
                Target(DIRECT, upstream),
                Target(FLOOR, floor.url + "/v1", floor.pid),
                Target(SYSTEMS[0], sqlite.url + "/v1", sqlite.pid),
                Target(SYSTEMS[1], postgres.url + "/v1", postgres.pid),
            ]
            progress(f"server: {turns:,} turns interleaved over {len(single)} systems")
            history, memory = await _one_conversation(single, turns, every=50 if ctx.quick else 250)
            progress(f"server: {CONCURRENT} concurrent conversations")
            spent = await _concurrent(single[1:], turns_each)
    finally:
        ctx.pg.drop(pg)
    return [_added_table(history, turns), _cpu_table(spent, CONCURRENT * turns_each), _memory_table(memory)]
