"""Turn and step event sequences of typical turns, checked against golden files in tests/golden/.

Each event becomes one line (ids replaced by ordinals, so the files are stable). A change of the sequence fails
here; when it is intended, regenerate with `CONTEXTFOLD_UPDATE_GOLDEN=1 pytest tests/test_runtime_golden.py`
and review the diff.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import pytest

from contextfold import ContextLengthError, ModelUnavailableError, Store
from contextfold.compaction import CompactionResult
from contextfold.models import ScriptedModel, Step
from contextfold.runtime import (
    InferenceResult,
    StepCompleted,
    StepProgress,
    StepStarted,
    ToolExecutionResult,
    ToolLike,
    TurnCompleted,
    TurnEvent,
    TurnFailed,
    TurnStarted,
)

from .test_runtime_turns import calls, make_agent

GOLDEN = Path(__file__).parent / "golden"


def render(events: Sequence[TurnEvent]) -> str:
    ids: dict[str, str] = {}

    def ordinal(value: str) -> str:
        kind = value.split("_", 1)[0]
        return ids.setdefault(value, f"{kind}#{sum(1 for k in ids if k.split('_', 1)[0] == kind) + 1}")

    lines = []
    for event in events:
        if isinstance(event, TurnStarted):
            lines.append(f"turn_started {ordinal(event.turn_id)}")
        elif isinstance(event, StepStarted):
            meta = json.dumps(event.metadata, sort_keys=True)
            lines.append(f"  step_started {ordinal(event.step_id)} {event.step_type} {meta}")
        elif isinstance(event, StepProgress):
            fields = {k: v for k, v in dataclasses.asdict(event.delta).items() if k != "type"}
            if "call_id" in fields:
                fields["call_id"] = ordinal(str(fields["call_id"]))
            lines.append(f"    {event.delta.type} {json.dumps(fields, sort_keys=True)}")
        elif isinstance(event, StepCompleted):
            lines.append(f"  step_completed {ordinal(event.step_id)} {event.step_type} {summarise(event, ordinal)}")
        elif isinstance(event, TurnCompleted):
            usage = f"in={event.usage.input_tokens} out={event.usage.output_tokens}"
            lines.append(
                f"turn_completed steps={event.num_steps} {usage} incomplete={event.incomplete_reason} "
                f"text={event.final_text!r}"
            )
        elif isinstance(event, TurnFailed):
            lines.append(f"turn_failed {event.error.kind}: {event.error.message}")
    text = "\n".join(lines) + "\n"
    return re.sub(r"\b(?:ev|call|batch|conv)_[0-9a-f]{24}\b", lambda m: ordinal(m.group(0)), text)


def summarise(event: StepCompleted, ordinal: Callable[[str], str]) -> str:
    result = event.result
    if isinstance(result, InferenceResult):
        names = [c.name for c in result.tool_calls]
        return f"stop={result.stop_reason} calls={names} text={result.text!r} error={result.error}"
    if isinstance(result, ToolExecutionResult):
        return "results=" + json.dumps([[ordinal(r.call_id), r.is_error, r.output[:60]] for r in result.results])
    assert isinstance(result, CompactionResult)
    return f"compacted={result.compacted} strategy={result.strategy} trigger={result.trigger}"


async def run(store: Store, steps: Sequence[Step], tools: Sequence[ToolLike] = (), **options: object) -> str:
    agent = make_agent(store, steps, tools, **options)
    session = await agent.create_session()
    return render([e async for e in session.stream("do the task")])


def lookup(key: str) -> str:
    """Look a key up.

    Args:
        key: The key.
    """
    if key == "missing":
        raise KeyError(key)
    return f"value of {key}"


async def scenario_text(store: Store) -> str:
    return await run(store, ["All done here, nothing to call."])


async def scenario_parallel_tools(store: Store) -> str:
    first_done = asyncio.Event()

    async def slow(n: int) -> str:
        """Slow."""
        await first_done.wait()
        return f"slow {n}"

    async def fast(n: int) -> str:
        """Fast."""
        first_done.set()
        return f"fast {n}"

    script: list[Step] = [calls(("slow", '{"n": 1}'), ("fast", '{"n": 2}')), "Both finished."]
    return await run(store, script, [slow, fast])


async def scenario_tool_error_then_answer(store: Store) -> str:
    script: list[Step] = [calls(("lookup", '{"key": "missing"}')), calls(("lookup", '{"key": "a"}')), "Found it."]
    return await run(store, script, [lookup])


async def scenario_step_limit(store: Store) -> str:
    return await run(store, [calls(("lookup", '{"key": "a"}'))] * 2, [lookup], max_steps=2)


async def scenario_model_failure(store: Store) -> str:
    script: list[Step] = [calls(("lookup", '{"key": "a"}')), ModelUnavailableError("upstream answered 503")]
    return await run(store, script, [lookup])


async def scenario_reactive_compaction(store: Store) -> str:
    agent = make_agent(store, [*(f"answer {n}" for n in range(6)), ContextLengthError("prompt is too long"), "ok"])
    session = await agent.create_session()
    for n in range(6):
        await session.turn(f"question {n} " + "words " * 50)
    return render([e async for e in session.stream("one more")])


async def scenario_auto_compaction_and_recall(store: Store) -> str:
    def page(n: int) -> str:
        """Read a page.

        Args:
            n: Page number.
        """
        return (f"page {n} holds the code ORCHID-77\n" if n == 1 else f"page {n}\n") + "line\n" * 960

    script: list[Step] = []
    for n in range(3):
        script += [calls(("page", f'{{"n": {n}}}')), f"read {n}"]
    agent = make_agent(store, script, [page], context_window=6_000, max_output_tokens=500)
    session = await agent.create_session()
    for n in range(3):
        await session.turn(f"read page {n}")
    assert session.conversation.view.totals.compactions == 0  # the turn below crosses the threshold
    model = agent.model
    assert isinstance(model, ScriptedModel)
    model.add(calls(("recall", '{"query": "ORCHID"}')), "The code is ORCHID-77.")
    return render([e async for e in session.stream("what was the code? " + "please " * 600)])


SCENARIOS: dict[str, Callable[[Store], Awaitable[str]]] = {
    "text": scenario_text,
    "parallel_tools": scenario_parallel_tools,
    "tool_error_then_answer": scenario_tool_error_then_answer,
    "step_limit": scenario_step_limit,
    "model_failure": scenario_model_failure,
    "reactive_compaction": scenario_reactive_compaction,
    "auto_compaction_and_recall": scenario_auto_compaction_and_recall,
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_event_sequence_matches_golden(name: str, sqlite_store: Store) -> None:
    produced = await SCENARIOS[name](sqlite_store)
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("CONTEXTFOLD_UPDATE_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(produced)
    assert produced == path.read_text()


def test_every_golden_file_has_a_scenario() -> None:
    assert sorted(p.stem for p in GOLDEN.glob("*.txt")) == sorted(SCENARIOS)
