"""`versus llama-stack`: contextfold's server beside Llama Stack 0.7.3, the same client, the same fake upstream.

Both are real processes on loopback in front of the zero-latency fake upstream of `benchmarks/_upstream.py` (its
own process), each on its own SQLite storage in a fresh temporary directory (`_servers.py`). The same client code
(`_drive.py`) posts non-streaming `/v1/responses` turns naming a conversation. For each system:

- added latency per turn: a turn's latency less the median latency of the same request sent to the upstream
  directly, at the start (turns 1-10) and at turn 200 (turns 191-200) of new conversations of 200 turns;
- database bytes after 200 turns: what the first 200-turn conversation added to freshly created databases (WAL
  checkpointed first), measured once the server has had a second to finish writes it queued;
- turns per second with 32 conversations taking turns at once;
- 8 turns posted at once to one conversation, then one more turn: which of the 8 reach the model's context on that
  turn (a recording upstream, `_recorder.py`, keeps what the model was sent). contextfold answers 409 to a turn on a
  busy conversation, or queues it with `--queue-turns`; both are shown.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .._processes import upstream_process
from .._report import Table, ms, percentile
from .._stores import progress, sqlite_size
from .._upstream import ANSWER
from . import _drive, _servers, _venv
from ._servers import Server

TURNS = 200
CONCURRENT = 32
AT_ONCE = 8
EARLY, LATE = (0, 10), (TURNS - 10, TURNS)


async def _settled_bytes(server: Server) -> int:
    """The server's databases in bytes, once what it queued has been written (sizes unchanged for a second)."""
    previous = -1
    while True:
        await asyncio.sleep(1.0)
        size = sum(sqlite_size(db) for db in server.databases if db.exists())
        if size == previous:
            return size
        previous = size


@dataclass(frozen=True)
class Measured:
    early: list[float]
    """Seconds per turn over turns 1-10 of each conversation."""
    late: list[float]
    """Seconds per turn over turns 191-200 of each conversation."""
    db_bytes: int
    turns_per_s: float


async def _measure(server: Server, conversations: int, turns_each: int) -> Measured:
    progress(f"versus llama-stack: {server.name}: {conversations} conversations of {TURNS} turns")
    await _drive.warm_up(server)
    empty = await _settled_bytes(server)
    times = [await _drive.one_conversation(server, TURNS)]
    grown = await _settled_bytes(server) - empty
    for _ in range(conversations - 1):
        times.append(await _drive.one_conversation(server, TURNS))
    progress(f"versus llama-stack: {server.name}: {CONCURRENT} conversations at once")
    wall = await _drive.concurrent(server, CONCURRENT, turns_each)
    return Measured(
        early=[t for run in times for t in run[EARLY[0] : EARLY[1]]],
        late=[t for run in times for t in run[LATE[0] : LATE[1]]],
        db_bytes=grown,
        turns_per_s=CONCURRENT * turns_each / wall,
    )


async def _at_once(server_of: str, workdir: Path) -> _drive.AtOnce:
    with _servers.recorder_process() as recorder:
        if server_of == "Llama Stack":
            context = _servers.llama_stack(workdir, recorder)
        else:
            context = _servers.contextfold(workdir, recorder, queue_turns=server_of.endswith("--queue-turns"))
        with context as server:
            return await _drive.at_once(server, recorder, AT_ONCE)


async def run(quick: bool) -> list[Table]:
    conversations = 1 if quick else 3
    turns_each = 3 if quick else 10
    results: dict[str, Measured] = {}
    with upstream_process() as upstream:
        direct = statistics.median(await _drive.direct(upstream, 200))
        for name in ("contextfold", "Llama Stack"):
            with tempfile.TemporaryDirectory(prefix="versus-") as tmp:
                workdir = Path(tmp)
                serving = (
                    _servers.llama_stack(workdir, upstream)
                    if name == "Llama Stack"
                    else _servers.contextfold(workdir, upstream)
                )
                with serving as server:
                    results[name] = await _measure(server, conversations, turns_each)
    at_once: dict[str, _drive.AtOnce] = {}
    for name in ("contextfold", "contextfold --queue-turns", "Llama Stack"):
        progress(f"versus llama-stack: {name}: {AT_ONCE} turns at once on one conversation")
        with tempfile.TemporaryDirectory(prefix="versus-") as tmp:
            at_once[name] = await _at_once(name, Path(tmp))
    return _tables(results, at_once, direct, conversations, turns_each)


def _added(times: list[float], direct: float, share: float) -> float:
    return ms(percentile([t - direct for t in times], share))


def _tables(
    results: dict[str, Measured],
    at_once: dict[str, _drive.AtOnce],
    direct: float,
    conversations: int,
    turns_each: int,
) -> list[Table]:
    ours, theirs = results["contextfold"], results["Llama Stack"]
    summary = Table(
        "versus Llama Stack: server overhead and correctness (same client, same zero-latency upstream)",
        ["measure", "contextfold", "Llama Stack", "contextfold ahead by", "ahead"],
    )

    def lower_better(measure: str, a: float, b: float, digits: int = 2) -> None:
        ratio = b / a if a > 0 else float("inf")
        summary.add(measure, round(a, digits), round(b, digits), f"x{ratio:.1f}", "✓" if a < b else "✗")

    windows = (
        ("turn 1 (turns 1-10)", ours.early, theirs.early),
        (f"turn {TURNS} (turns {LATE[0] + 1}-{TURNS})", ours.late, theirs.late),
    )
    for label, our_times, their_times in windows:
        for share, name in ((0.5, "p50"), (0.95, "p95")):
            a, b = _added(our_times, direct, share), _added(their_times, direct, share)
            lower_better(f"added latency per turn, {label}, {name} (ms)", a, b)
    lower_better(f"database bytes after {TURNS} turns (KB)", ours.db_bytes / 1024, theirs.db_bytes / 1024, 1)
    rate_a, rate_b = ours.turns_per_s, theirs.turns_per_s
    summary.add(
        f"turns per second, {CONCURRENT} conversations at once",
        round(rate_a, 1),
        round(rate_b, 1),
        f"x{rate_a / rate_b:.1f}",
        "✓" if rate_a > rate_b else "✗",
    )
    whole_a = max(at_once["contextfold"].whole, at_once["contextfold --queue-turns"].whole)
    whole_b = at_once["Llama Stack"].whole
    summary.add(
        f"of {AT_ONCE} turns at once on one conversation: kept whole and in order in the next turn's context",
        f"{at_once['contextfold'].whole} (409 to the other {at_once['contextfold'].refused}); "
        f"{at_once['contextfold --queue-turns'].whole} with --queue-turns",
        whole_b,
        "—" if whole_b == 0 else f"x{whole_a / whole_b:.1f}",
        "✓" if whole_a > whole_b else "✗",
    )
    summary.notes.append(
        f"Installed: {_venv.installed(_venv.LLAMA_STACK)}. Llama Stack runs its `starter` distribution's stores on "
        "SQLite (a key-value and a SQL database) with only the providers its Responses API needs; contextfold runs "
        f"`serve` on one SQLite file with a 32,000-token window. Latency: {conversations} new conversation(s) of "
        f"{TURNS} non-streaming turns each (~60-token input, the {len(ANSWER)}-character answer), windows of 10 "
        f"turns pooled; 'added' = the turn's latency less the upstream's own median ({ms(direct):.2f} ms for the "
        "same request sent directly). Database bytes: what the first 200-turn conversation added to new databases. "
        f"Turns per second: {CONCURRENT} new conversations taking {turns_each} turns each at once. "
        "'contextfold ahead by' is Llama Stack's figure over contextfold's (contextfold's over Llama Stack's for "
        "turns per second)."
    )
    detail = Table(
        f"versus Llama Stack: {AT_ONCE} turns posted at once to one conversation, then one more turn",
        [
            "server",
            "answered 200",
            "refused 409",
            "in the conversation's items",
            "in the next turn's context",
            "kept whole (question, its answer)",
            "answered with the earlier turns in context",
        ],
    )
    for name, outcome in at_once.items():
        detail.add(
            name,
            outcome.accepted,
            outcome.refused,
            outcome.in_items,
            outcome.in_context,
            outcome.whole,
            outcome.saw_earlier,
        )
    detail.notes.append(
        "A recording fake upstream answers each request 'answer to: <its last question>' and keeps the messages it "
        "was sent. 'In the conversation's items': the 8 questions listed by `GET /v1/conversations/{id}/items` "
        "after the next turn. 'In the next turn's context': the 8 questions found in the messages the model got "
        "on the turn after. 'Kept whole': the question directly followed by its own answer. 'Answered with the "
        "earlier turns': turns whose model request held every turn the server had accepted before them."
    )
    return [summary, detail]
