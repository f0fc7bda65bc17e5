"""`proxy`: the time the compaction proxy adds to a request, and the upstream tokens it bills against forwarding the
client's full history.

Latency: real server processes (`python -m contextfold serve --upstream ...`, on SQLite and on PostgreSQL) and the
floor pass-through (`_floor.py`) in front of the zero-latency fake OpenAI-compatible upstream (its own process). A
client that keeps its own history posts streamed Chat Completions requests, resending everything each time, and
sends each request to every system in turn (`_interleave.py`). The added time of a request is its latency through a
system less the upstream's own for the same body; for contextfold it includes reading and hashing the whole
history, matching it, appending the new message, the fold and compaction checks, the upstream call and the answer's
mapping, and its rows are read as a multiple of the floor's.

Tokens: the scripted coding agent of the tests (`tests/fakes/coding_*`: tool outputs of 1-8 KB, a fact planted at
request 3 and asked for at the last one) runs once through the proxy in front of a 32k-token upstream, and once
straight against the same upstream with no window limit (what forwarding the full history costs).
"""

from __future__ import annotations

import itertools
import json
import statistics
from collections.abc import Sequence
from typing import Any

import httpx

from ._interleave import (
    DIRECT,
    FLOOR,
    Run,
    Target,
    added,
    chat_history,
    requests_for,
    size_windows,
    streaming_cell,
    streams,
    times_floor,
)
from ._processes import WINDOW, floor_process, serve_process, serving, upstream_process
from ._report import Table
from ._stores import RESULTS, Context, progress

SIZES = (22, 244, 422)
"""History sizes (KB of request body) the latency rows are taken at."""


def _p50_target(kb: int) -> float:
    """The issue's targets, as a multiple of the floor's added time: tighter where the history is short."""
    return 1.3 if kb <= SIZES[0] else 2.0


P95_TARGET = 1.8


def shape(quick: bool) -> tuple[int, int, int]:
    """(requests, padding, window): quick mode reaches the same sizes in a tenth of the requests, with longer
    messages."""
    padding, width = (40, 10) if quick else (4, 100)
    return requests_for(SIZES[-1], padding, width), padding, width


def _mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def latency_table(title: str, run: Run, systems: Sequence[str], width: int, *, targets: Sequence[str]) -> Table:
    """One row per system and history size: added p50/p95 over the upstream alone and as a multiple of the floor's.

    `targets` are the systems whose rows are marked against the issue's targets.
    """
    table = Table(
        title,
        ["system", "history (KB)", "added p50 ms", "added p95 ms", "x floor p50", "x floor p95", "target (x floor)"],
    )
    windows = size_windows(run.sizes, SIZES, width)
    for name in systems:
        for kb, (start, end) in zip(SIZES, windows, strict=True):
            mine, floor = added(run, name, start, end), added(run, FLOOR, start, end)
            goal = "—"
            if name in targets:
                p50_ok = mine.p50 <= _p50_target(kb) * floor.p50
                p95_ok = mine.p95 <= P95_TARGET * floor.p95
                goal = f"p50 ≤ {_p50_target(kb):g}x {_mark(p50_ok)}, p95 ≤ {P95_TARGET:g}x {_mark(p95_ok)}"
            table.add(
                name,
                round(statistics.mean(run.sizes[start:end]) / 1024),
                round(mine.p50, 2),
                round(mine.p95, 2),
                times_floor(mine.p50, floor.p50),
                times_floor(mine.p95, floor.p95),
                goal,
            )
    broken = [f"{name} ({count})" for name, count in run.broken.items() if count]
    table.notes.append(
        f"{len(run.sizes):,} streamed Chat Completions requests of one growing history, each sent to every system in "
        f"turn (the upstream alone included); rows are the {width} requests around each size. 'Added' is a request's "
        "latency to the last byte less the upstream's own for the same request (paired), so the floor row is what a "
        "minimal Python pass-through costs. Answers missing the upstream's text: "
        + (", ".join(broken) if broken else "none")
        + "."
    )
    return table


async def _latency(ctx: Context) -> list[Table]:
    count, padding, width = shape(ctx.quick)
    pg = ctx.pg.database()
    for leftover in RESULTS.glob("proxy.db*"):
        leftover.unlink()
    try:
        with (
            upstream_process() as upstream,
            floor_process(upstream) as floor,
            serving(str(RESULTS / "proxy.db"), upstream) as sqlite,
            serving(pg, upstream) as postgres,
        ):
            targets = [
                Target(DIRECT, upstream),
                Target(FLOOR, floor.url + "/v1", floor.pid),
                Target("contextfold (SQLite)", sqlite.url + "/v1", sqlite.pid),
                Target("contextfold (PostgreSQL)", postgres.url + "/v1", postgres.pid),
            ]
            progress(f"proxy: latency, {count:,} requests interleaved over {len(targets)} systems")
            run = await chat_history(targets, count, padding)
            streamed = {t.name: streaming_cell(await streams(t)) for t in targets[1:]}
    finally:
        ctx.pg.drop(pg)
    systems = [t.name for t in targets[1:]]
    table = latency_table(
        "Proxy: time added to a streamed Chat Completions request as the client's history grows, beside the floor",
        run,
        systems,
        width,
        targets=systems[1:],
    )
    table.notes.append(
        f"contextfold runs with a {WINDOW:,}-token window, so it compacts as the history grows (the peers in "
        "`benchmarks.versus` run with theirs held off). Streams: " + "; ".join(f"{k}: {v}" for k, v in streamed.items())
    )
    return [table]


async def _tokens(ctx: Context) -> Table:
    from tests.fakes.coding_agent import ClientOptions, CodingClient, CodingUpstream, Wire

    requests = 100 if ctx.quick else 200
    table = Table(
        f"Proxy: a scripted coding agent resending its history, {requests} requests, tool outputs 1-8 KB, a "
        f"{CODING_WINDOW:,}-token upstream",
        [
            "client wire",
            "full history billed (tokens)",
            "through the proxy billed",
            "saved",
            "peak request",
            "compactions",
            "requests extending the previous one",
            "fact from request 3 answered",
        ],
    )
    wires: tuple[tuple[Wire, str], ...] = (("openai-chat", "coder"), ("anthropic", "claude-coder"))
    for wire, model in wires:
        progress(f"proxy: coding agent, {wire}")
        with CodingUpstream(window=CODING_WINDOW) as upstream:
            db = RESULTS / f"proxy-agent-{wire}.db"
            for leftover in RESULTS.glob(f"{db.name}*"):
                leftover.unlink()
            config = RESULTS / "proxy-agent.toml"
            config.write_text(_routes(upstream.url))
            with serve_process(str(db), upstream.url + "/v1", "--config", str(config)) as url:
                options = ClientOptions(requests=requests, wire=wire, model=model, max_tokens=1_024)
                async with CodingClient(url, options) as client:
                    run = await client.run()
                conversation = run.exchanges[-1].conversation
                async with httpx.AsyncClient(base_url=url) as http:
                    context = (await http.get(f"/v1/conversations/{conversation}/context")).json()
        agent = upstream.model_requests()
        extending = sum(_extends(a.body, b.body) for a, b in itertools.pairwise(agent))
        billed = sum(r.tokens for r in upstream.requests)
        full = sum(exchange.full_tokens for exchange in run.exchanges)
        table.add(
            wire,
            full,
            billed,
            f"{100 * (1 - billed / full):.0f} %",
            max(r.tokens for r in upstream.requests),
            context["totals"]["compactions"],
            f"{100 * extending / (len(agent) - 1):.1f} %",
            "yes" if run.answer == f"The deploy code is {run.fact}." else "no",
        )
    table.notes.append(
        "Tokens are the fake upstream's count (characters / 4), summary requests included in what the proxy billed. "
        "The full-history column is what the same client costs sent straight to an upstream with no window limit. "
        "The fact is answered through hidden recall: the model calls `recall`, the proxy answers, the client never "
        "sees the call."
    )
    return table


CODING_WINDOW = 32_000


def _routes(upstream: str) -> str:
    common = f'api_key = "sk-bench"\ncontext_window = {CODING_WINDOW}\n'
    return (
        f'[[models]]\nname = "coder"\nprovider = "openai-chat"\nbase_url = "{upstream}/v1"\n{common}\n'
        f'[[models]]\nname = "claude-coder"\nprovider = "anthropic"\nbase_url = "{upstream}"\n{common}'
    )


def _extends(before: dict[str, Any], after: dict[str, Any]) -> bool:
    old, new = before["messages"], after["messages"]
    same = all(before.get(k) == after.get(k) for k in ("system", "tools"))
    return same and json.dumps(new[: len(old)]) == json.dumps(old)


async def run(ctx: Context) -> list[Table]:
    return [*await _latency(ctx), await _tokens(ctx)]
