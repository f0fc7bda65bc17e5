"""`fidelity`: what a fold keeps. Planted rules, constraints, facts, goals and preferences, after 700+ turns.

The sessions come from `fidelity_session.py` (generated, seeded; tool outputs of 1-30 KB; 30 planted items, some
updated later). Each runs at budgets of 10, 20 and 30 % of its own size, with (a) no summariser model (the
deterministic path), (b) a summariser that answers "Noted." and (c) the built-in extractive summariser (the `test`
model's), through two paths:

- library: a `Conversation` on SQLite; every model request of the agent loop (after the user message, after the
  tool results) is preceded by `fit`, as the runtime does, and its window recorded;
- proxy: a real `contextfold serve` process in front of a loopback Chat Completions upstream
  (`fidelity_upstream.py`). The client has the history already: its first request carries all but the last 12
  turns in one body (one input that must fold like a stored conversation), then it runs the last turns as an agent
  does, one tool call and one answer per turn, resending everything each time.

At the end the final window is read (for the proxy, the conversation loaded from the server's database) and each
item is scored: **in window** (its current wording is in the window verbatim), **answerable** (in the window, or
`recall` with its subject words returns the current wording before any unmarked older one), **stale** (an updated
item whose old wording the window shows as current: in the carried state, or without the new wording anywhere),
and **over budget** (requests whose estimated window exceeded the budget; for the proxy from the server's usage
records). **Extends** is the share of requests whose window extends the previous one (prompt-cache friendly).

    python -m benchmarks --only fidelity [--quick]
    python -m benchmarks.fidelity [--quick] [--paths library] [--budgets 0.2] [--modes a,b]   # one slice
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._processes import _free_port, serve_process
from benchmarks._report import Table
from benchmarks.fidelity_session import KINDS, POSITIONS, Planted, Session, generate
from contextfold import CompactionPolicy, Conversation
from contextfold._errors import ContextOverflowError
from contextfold.events import (
    Compaction,
    ToolCall,
    ToolResult,
    TurnMarker,
    Usage,
    assistant,
    new_id,
    system,
    text_of,
    user,
)
from contextfold.models import ModelResponse, ModelSettings
from contextfold.server._testmodel import TestModel
from contextfold.store import SQLiteStore
from contextfold.view import Window

MODES = {"a": "no model", "b": "useless model", "c": "extractive model"}
BUDGETS = (0.1, 0.2, 0.3)
RESERVED = 1_000
PROXY_TAIL = 12
CHARS_PER_TOKEN = 3.5


class Useless:
    """A summariser that always answers the same empty courtesy."""

    name = "useless"

    async def request(self, window: Window, settings: ModelSettings) -> ModelResponse:
        return ModelResponse(text="Noted.", input_tokens=10, output_tokens=2)


@dataclass
class Outcome:
    path: str
    fraction: float
    mode: str
    budget: int
    in_window: dict[tuple[str, str], int] = field(default_factory=dict)
    answerable: dict[tuple[str, str], int] = field(default_factory=dict)
    stale: int = 0
    folded: int = 0
    recalled: int = 0
    requests: int = 0
    over_budget: int = 0
    extends: int = 0
    compared: int = 0
    compactions: int = 0
    refused: str | None = None
    seconds: float = 0.0

    @property
    def total_in_window(self) -> int:
        return sum(self.in_window.values())

    @property
    def total_answerable(self) -> int:
        return sum(self.answerable.values())


def _summariser(mode: str) -> Any:
    return {"a": None, "b": Useless(), "c": TestModel("test")}[mode]


def _session_tokens(session: Session) -> int:
    return int(session.chars() / CHARS_PER_TOKEN)


# --- library ------------------------------------------------------------------------------------------------------


async def library_run(session: Session, fraction: float, mode: str, folder: Path) -> Outcome:
    budget = int(fraction * _session_tokens(session))
    outcome = Outcome("library", fraction, mode, budget)
    started = time.perf_counter()
    store = await SQLiteStore.open(folder / f"library-{fraction}-{mode}.db")
    try:
        conv = await Conversation.create(store)
        await conv.append(system(session.system))
        summariser = _summariser(mode)
        policy = CompactionPolicy()
        previous: list[str] | None = None
        for turn in session.turns:
            tid = new_id("turn")
            await conv.append(TurnMarker(status="started", turn_id=tid), user(turn.user, turn_id=tid))
            for step in range(2 if turn.calls else 1):  # a request after the input, one after the tool results
                try:
                    await conv.fit(budget=budget, policy=policy, summariser=summariser)
                except ContextOverflowError as error:
                    outcome.refused = str(error)[:120]
                    return outcome
                signature = _signature(conv.window())
                outcome.requests += 1
                outcome.over_budget += conv.view.tokens > budget
                if previous is not None:
                    outcome.compared += 1
                    outcome.extends += signature[: len(previous)] == previous
                previous = signature
                if step == 0 and turn.calls:
                    batch = new_id("batch")
                    calls = [
                        ToolCall(
                            call_id=new_id("call"), name=c.name, arguments=c.arguments, batch_id=batch, turn_id=tid
                        )
                        for c in turn.calls
                    ]
                    results = [
                        ToolResult(call_id=call.call_id, output=c.output, turn_id=tid)
                        for call, c in zip(calls, turn.calls, strict=True)
                    ]
                    await conv.append(*calls, *results)
            await conv.append(assistant(turn.answer, turn_id=tid), TurnMarker(status="completed", turn_id=tid))
        await score(conv, session, outcome)
        outcome.compactions = conv.view.totals.compactions
    finally:
        await store.close()
        outcome.seconds = time.perf_counter() - started
    return outcome


def _signature(window: Window) -> list[str]:
    keys = [hashlib.blake2b(text_of(item).encode(), digest_size=8).hexdigest() + item.id for item in window.items]
    return [str(window.system_prompt), *keys]


# --- proxy --------------------------------------------------------------------------------------------------------


@contextmanager
def _upstream(mode: str) -> Iterator[str]:
    port = _free_port()
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{root / 'src'}{os.pathsep}{root}"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.fidelity_upstream",
            str(port),
            {"a": "fail", "b": "useless"}.get(mode, "extractive"),
        ],
        cwd=root,
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert process.stdout is not None
        process.stdout.readline()
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        process.wait(timeout=10)


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "run_command",
            "description": "Run a command.",
            "parameters": {"type": "object", "properties": {}},
        },
    }
]


def _history(session: Session, upto: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": session.system}]
    for n, turn in enumerate(session.turns[:upto]):
        messages.append({"role": "user", "content": turn.user})
        if turn.calls:
            calls = [
                {"id": f"h{n}_{k}", "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for k, c in enumerate(turn.calls)
            ]
            messages.append({"role": "assistant", "content": None, "tool_calls": calls})
            messages += [
                {"role": "tool", "tool_call_id": f"h{n}_{k}", "content": c.output} for k, c in enumerate(turn.calls)
            ]
        messages.append({"role": "assistant", "content": turn.answer})
    return messages


async def proxy_run(session: Session, fraction: float, mode: str, folder: Path) -> Outcome:
    budget = int(fraction * _session_tokens(session))
    outcome = Outcome("proxy", fraction, mode, budget)
    started = time.perf_counter()
    db = str(folder / f"proxy-{fraction}-{mode}.db")
    conversation_id = None
    config = folder / "limits.toml"
    # A client arriving with a 740-turn history sends thousands of messages and megabytes in its first request:
    # over the default per-request limits, which an operator serving such clients raises.
    config.write_text("[limits]\nmax_items_per_request = 10000\nmax_body_bytes = 67108864\n")
    flags = ("--config", str(config), "--context-window", str(budget + RESERVED))
    with _upstream(mode) as upstream, serve_process(db, upstream, *flags) as url:
        first = len(session.turns) - PROXY_TAIL
        messages = _history(session, first)
        async with httpx.AsyncClient(base_url=url, timeout=900) as client:
            for turn in session.turns[first:]:
                messages.append({"role": "user", "content": turn.user})
                for _ in range(2):  # the tool call, then the answer
                    body = {"model": "bench", "messages": messages, "tools": TOOLS, "max_tokens": RESERVED}
                    response = await client.post("/v1/chat/completions", json=body)
                    if response.status_code != 200:
                        outcome.refused = f"{response.status_code}: {response.text[:160]}"
                        break
                    conversation_id = response.headers.get("x-contextfold-conversation", conversation_id)
                    message = response.json()["choices"][0]["message"]
                    messages.append({k: v for k, v in message.items() if k in ("role", "content", "tool_calls")})
                    if not message.get("tool_calls"):
                        break
                    output = turn.calls[0].output if turn.calls else "ok"
                    messages.append({"role": "tool", "tool_call_id": message["tool_calls"][0]["id"], "content": output})
                if outcome.refused:
                    break
            stats = (await client.get(upstream.removesuffix("/v1") + "/stats")).json()
    outcome.compared, outcome.extends = stats["requests"], stats["extends"]
    if conversation_id is not None:
        store = await SQLiteStore.open(db)
        try:
            conv = await Conversation.load(store, conversation_id)
            events = await store.read(conversation_id)
            sent = [e for e in events if isinstance(e, Usage)]
            outcome.requests = len(sent)
            outcome.over_budget = sum((e.estimated_input_tokens or 0) > budget for e in sent)
            outcome.compactions = sum(isinstance(e, Compaction) for e in events)
            if not outcome.refused:
                await score(conv, session, outcome)
        finally:
            await store.close()
    outcome.seconds = time.perf_counter() - started
    return outcome


# --- scoring ------------------------------------------------------------------------------------------------------


def _normal(text: str) -> str:
    return " ".join(text.split())


async def score(conv: Conversation, session: Session, outcome: Outcome) -> None:
    window = conv.window()
    shown = _normal("\n".join([window.system_prompt or "", *(text_of(item) for item in window.items)]))
    summary = conv.view.active_summary()
    summarised = _normal(summary.summary or "") if summary is not None else ""
    last = len(session.turns) - 1
    for item in session.planted:
        cell = (item.kind, item.position)
        updated = item.update_text is not None and (item.update_turn or 0) <= last
        current = item.current if updated else item.text
        visible = _normal(current) in shown
        outcome.in_window[cell] = outcome.in_window.get(cell, 0) + visible
        if updated and _normal(item.text) in shown and (not visible or _normal(item.text) in summarised):
            outcome.stale += 1
        recalled = await _recalled(conv, item, current)
        if not await _shown_in_full(conv, current):
            outcome.folded += 1
            outcome.recalled += recalled
        answerable = visible or recalled
        outcome.answerable[cell] = outcome.answerable.get(cell, 0) + answerable


async def _shown_in_full(conv: Conversation, current: str) -> bool:
    """Whether the message stating `current` is itself in the view (not folded into a summary or the state)."""
    return any(_normal(current) in _normal(text_of(item)) for item in conv.view.items.values())


async def _recalled(conv: Conversation, item: Planted, current: str) -> bool:
    hits = await conv.recall(item.query, limit=5)
    found = await conv.store.read(conv.id, ids=[hit.event_id for hit in hits]) if hits else []
    texts = {event.id: _normal(text_of(event)) for event in found}
    for hit in hits:
        text = texts.get(hit.event_id, "")
        if _normal(current) in text:
            return True
        if _normal(item.text) in text and not getattr(hit, "superseded", False):
            return False  # an older wording first, not marked: the agent would take it as current
    return False


# --- tables -------------------------------------------------------------------------------------------------------


def tables(outcomes: Sequence[Outcome], session: Session) -> list[Table]:
    planted = len(session.planted)
    summary = Table(
        f"fidelity: {planted} planted items after {len(session.turns)} turns "
        f"(~{_session_tokens(session):,} tokens; the budget is a share of that)",
        [
            "path",
            "budget",
            "summariser",
            "in window",
            "answerable",
            "recall (folded)",
            "stale as current",
            "over budget",
            "extends previous",
            "compactions",
            "target (at 20 %)",
        ],
    )
    for o in outcomes:
        if o.refused and not o.in_window:
            summary.add(
                o.path,
                f"{o.fraction:.0%} ({o.budget:,})",
                MODES[o.mode],
                None,
                None,
                None,
                None,
                f"{o.over_budget}/{o.requests}",
                None,
                o.compactions,
                f"refused: {o.refused}",
            )
            continue
        met = None
        if abs(o.fraction - 0.2) < 1e-9:
            ok = (
                o.total_answerable == planted
                and o.stale == 0
                and o.over_budget == 0
                and (o.mode == "c" or o.total_in_window >= 0.9 * planted)
            )
            met = "✓" if ok else "✗"
        summary.add(
            o.path,
            f"{o.fraction:.0%} ({o.budget:,})",
            MODES[o.mode],
            f"{o.total_in_window}/{planted}",
            f"{o.total_answerable}/{planted}",
            f"{o.recalled}/{o.folded}",
            o.stale,
            f"{o.over_budget}/{o.requests}",
            f"{o.extends}/{o.compared}" if o.compared else None,
            o.compactions,
            met,
        )
    summary.notes.append(
        "Targets at 20 %: in window ≥ 90 % with no model and with the useless one; answerable 100 %; 0 stale; "
        "0 over budget. Answerable: in the window, or recall with the item's subject words returns its current "
        "wording before any unmarked older one. Recall (folded): the same recall, for the items whose message was "
        "folded. Extends: requests whose window extends the previous one byte for byte."
    )
    detail = Table(
        "fidelity at 20 %: in window / answerable, by kind and position",
        ["kind", "position", *(f"{o.path} {o.mode}" for o in outcomes if abs(o.fraction - 0.2) < 1e-9)],
    )
    per_cell = {(p.kind, p.position): 0 for p in session.planted}
    for p in session.planted:
        per_cell[(p.kind, p.position)] += 1
    for kind in KINDS:
        for position in POSITIONS:
            cells = [
                f"{o.in_window.get((kind, position), 0)}/{o.answerable.get((kind, position), 0)} of "
                f"{per_cell.get((kind, position), 0)}"
                for o in outcomes
                if abs(o.fraction - 0.2) < 1e-9
            ]
            detail.add(kind, position, *cells)
    return [summary, detail]


async def measure(
    quick: bool, paths: Sequence[str], budgets: Sequence[float], modes: Sequence[str], seed: int = 7
) -> tuple[Session, list[Outcome]]:
    session = generate(seed, turns=700 if quick else 740)
    outcomes = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            for fraction in budgets:
                for mode in modes:
                    print(f"  … fidelity {path} {fraction:.0%} {MODES[mode]}", file=sys.stderr, flush=True)
                    run = library_run if path == "library" else proxy_run
                    outcomes.append(await run(session, fraction, mode, Path(tmp)))
    return session, outcomes


async def run(ctx: Any) -> list[Table]:
    paths = ["library", "proxy"]
    budgets = (0.2,) if ctx.quick else BUDGETS
    modes = ("a", "b") if ctx.quick else tuple(MODES)
    session, outcomes = await measure(ctx.quick, paths, budgets, modes)
    return tables(outcomes, session)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fidelity", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--paths", default="library,proxy")
    parser.add_argument("--budgets", default=",".join(str(b) for b in BUDGETS))
    parser.add_argument("--modes", default="a,b,c")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    session, outcomes = asyncio.run(
        measure(
            args.quick,
            args.paths.split(","),
            [float(b) for b in args.budgets.split(",")],
            args.modes.split(","),
            args.seed,
        )
    )
    made = tables(outcomes, session)
    for table in made:
        print(table.markdown(), flush=True)
    if args.json:
        args.json.write_text(json.dumps([t.as_json() for t in made], indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
