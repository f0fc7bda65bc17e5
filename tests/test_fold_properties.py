"""The view is a pure fold: for generated logs, incremental == rebuilt from the log == reloaded from the store.

Logs are generated as sequences of operations through the public `Conversation` API (turns with parallel tool
batches, failed, interrupted and crashed turns, pins, deletions of items in view and folded away, manual and
automatic compactions with summarisers that succeed, fail, return nothing or too much, configuration changes,
usage reports), on both stores. After every operation the three views must agree and every invariant must hold.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Literal

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from contextfold import (
    CompactionPolicy,
    ContextOverflowError,
    Conversation,
    ModelResponse,
    ScriptedModel,
    Store,
    View,
)
from contextfold.events import Compaction, ConfigChange, Deletion, Usage, system
from contextfold.view import Window
from contextfold.view._invariants import check

from .scenario import turn

EXAMPLES = {"sqlite": int(os.environ.get("FOLD_EXAMPLES", "2000")), "postgres": 500}


@dataclass(frozen=True)
class Turn:
    batches: list[int]
    output: int
    status: Literal["completed", "failed", "interrupted", "crash"]
    reasoning: bool
    tool_summary: bool
    fit_midway: bool


@dataclass(frozen=True)
class Burst:
    """Several completed turns, each followed by an automatic compaction check on a small budget."""

    turns: int
    output: int
    budget: int
    mode: Literal["ok", "fail", "empty", "huge", "none"]


@dataclass(frozen=True)
class PinItem:
    index: int
    pinned: bool


@dataclass(frozen=True)
class DeleteItem:
    index: int
    folded: bool


@dataclass(frozen=True)
class Compact:
    budget: int
    mode: Literal["ok", "fail", "empty", "huge", "none"]
    trigger: Literal["auto", "manual"]
    policy: CompactionPolicy


@dataclass(frozen=True)
class Config:
    prompt: str | None


@dataclass(frozen=True)
class System:
    text: str


@dataclass(frozen=True)
class Report:
    error: int


Op = Turn | Burst | PinItem | DeleteItem | Compact | Config | System | Report

turns = st.builds(
    Turn,
    batches=st.lists(st.integers(1, 3), max_size=2),
    output=st.integers(0, 4000),
    status=st.sampled_from(["completed", "completed", "completed", "failed", "interrupted", "crash"]),
    reasoning=st.booleans(),
    tool_summary=st.booleans(),
    fit_midway=st.booleans(),
)
compactions = st.builds(
    Compact,
    budget=st.integers(150, 5000),
    mode=st.sampled_from(["ok", "ok", "fail", "empty", "huge", "none"]),
    trigger=st.sampled_from(["auto", "manual"]),
    policy=st.builds(CompactionPolicy, head_items=st.integers(0, 3), tail_turns=st.integers(1, 3)),
)
bursts = st.builds(
    Burst,
    turns=st.integers(2, 8),
    output=st.integers(200, 6000),
    budget=st.integers(1500, 6000),
    mode=st.sampled_from(["ok", "ok", "ok", "fail", "empty", "huge"]),
)
ops = st.one_of(
    bursts,
    turns,
    turns,
    turns,
    st.builds(PinItem, index=st.integers(0, 200), pinned=st.booleans()),
    st.builds(DeleteItem, index=st.integers(0, 400), folded=st.booleans()),
    compactions,
    compactions,
    st.builds(Config, prompt=st.one_of(st.none(), st.text(max_size=60))),
    st.builds(System, text=st.text(min_size=1, max_size=40)),
    st.builds(Report, error=st.integers(-40, 300)),
)


def summariser(mode: str) -> ScriptedModel | None:
    if mode == "none":
        return None

    def answer(window: Window) -> ModelResponse:
        if mode == "fail":
            raise RuntimeError("summariser is down")
        text = {"ok": "## Goal\nkeep going", "empty": "  ", "huge": "word " * 20_000}[mode]
        return ModelResponse(text=text, input_tokens=100, output_tokens=10)

    return ScriptedModel([answer] * 4)


async def run(conv: Conversation, op: Op, crashed: list[str]) -> int | None:
    """Apply one operation. Returns a budget the view must now fit, if the operation guaranteed one."""
    if crashed:  # the next process to use the conversation finds the crashed turn open and marks it
        recovered = await Conversation.load(conv.store, conv.id)
        assert await recovered.recover() == [crashed.pop()]
        await conv.refresh()
    if isinstance(op, Turn):
        status = None if op.status == "crash" else op.status
        events = turn(
            "do the next step",
            batches=op.batches,
            output="x" * op.output,
            tool_summary="short summary" if op.tool_summary else None,
            reasoning=op.reasoning,
            status=status,
        )
        await conv.append(*events[:2])
        if op.fit_midway:
            with contextlib.suppress(ContextOverflowError):
                await conv.fit(budget=4000, summariser=summariser("ok"))
        if events[2:]:
            await conv.append(*events[2:])
        if status is None:
            crashed.append(events[0].turn_id or "")
    elif isinstance(op, Burst):
        for _ in range(op.turns):
            await conv.append(*turn("next", batches=[2], output="y" * op.output))
            with contextlib.suppress(ContextOverflowError):
                await conv.fit(budget=op.budget, summariser=summariser(op.mode))
    elif isinstance(op, PinItem):
        if conv.view.items:
            seqs = list(conv.view.items)
            await conv.pin(conv.view.items[seqs[op.index % len(seqs)]].id, pinned=op.pinned)
    elif isinstance(op, DeleteItem):
        log = await conv.store.read(conv.id)
        candidates = [e for e in log if e.type_name() in ("message", "tool_call", "tool_result", "compaction")]
        if op.folded:
            candidates = [e for e in candidates if e.seq not in conv.view.items] or candidates
        if candidates:
            await conv.delete(candidates[op.index % len(candidates)].id)
    elif isinstance(op, Compact):
        head = conv.head
        try:
            if op.trigger == "auto":
                await conv.fit(budget=op.budget, summariser=summariser(op.mode), policy=op.policy)
                return op.budget
            await conv.compact(budget=op.budget, summariser=summariser(op.mode), policy=op.policy)
        except ContextOverflowError:
            assert conv.head == head or op.trigger == "auto", "a refused manual compaction wrote something"
    elif isinstance(op, Config):
        await conv.append(ConfigChange(system_prompt=op.prompt))
    elif isinstance(op, System):
        await conv.append(system(op.text))
    elif isinstance(op, Report):
        estimated = conv.view.estimated_tokens
        await conv.append(
            Usage(
                model="m",
                input_tokens=max(0, estimated + op.error),
                output_tokens=5,
                estimated_input_tokens=estimated,
            )
        )
    return None


async def check_views(store: Store, conv: Conversation, budget: int | None) -> None:
    log = await store.read(conv.id)
    rebuilt = View.replay(log)
    reloaded = await Conversation.load(store, conv.id)
    live = conv.view.state()
    assert rebuilt.state() == live
    assert reloaded.view.state() == live
    assert reloaded.window() == conv.window()
    assert check(log, conv.view, budget, in_turn=False) == []


async def fold_property(store: Store, operations: list[Op]) -> None:
    conv = await Conversation.create(store)
    crashed: list[str] = []
    for op in operations:
        budget = await run(conv, op, crashed)
        await check_views(store, conv, budget)
    log = await store.read(conv.id)
    kinds = {e.strategy for e in log if isinstance(e, Compaction)}
    event("compaction strategies: " + (", ".join(sorted(kinds)) or "none"))
    event("deletions: " + str(any(isinstance(e, Deletion) for e in log)))
    event("stale summary at some point: " + str(any(isinstance(e, Deletion) and e.erased_summaries for e in log)))


BASE = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@settings(BASE, max_examples=EXAMPLES["sqlite"])
@given(operations=st.lists(ops, min_size=8, max_size=40))
async def test_incremental_rebuilt_and_reloaded_views_agree_sqlite(sqlite_store: Store, operations: list[Op]) -> None:
    await fold_property(sqlite_store, operations)


@settings(BASE, max_examples=EXAMPLES["postgres"])
@given(operations=st.lists(ops, min_size=8, max_size=40))
async def test_incremental_rebuilt_and_reloaded_views_agree_postgres(pg_store: Store, operations: list[Op]) -> None:
    await fold_property(pg_store, operations)
