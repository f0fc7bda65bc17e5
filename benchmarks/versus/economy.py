"""Token economy on a long agent session: what four ways of keeping the context cost and keep.

One scripted 1,000-turn session (_session.py: 1-2 tool calls a turn, outputs 1-30 KB, six planted facts asked for
at the end) in a 32k window, run four ways: the full history every time, the last N turns, observation masking
only, and contextfold's policy through the real runtime (masking, then summaries, with `recall` over what was
folded; the summariser is the extractive one of `contextfold simulate`, and what it is sent is billed too).

Per strategy: input tokens billed, peak and mean request, requests over the budget (a provider would refuse
them), the share of requests whose Chat Completions payload extends the previous one (what prompt caches reward),
compactions, and facts answered from what the model saw, without and with recall.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._report import Table
from contextfold.cli._simulate import ExtractiveSummariser
from contextfold.compaction import CompactionPolicy
from contextfold.events import Compaction, ToolResult, ToolSpec
from contextfold.models import (
    ModelProfile,
    ModelResponse,
    ModelSettings,
    ScriptedModel,
    StreamEvent,
    ToolCallRequest,
)
from contextfold.runtime import Agent, AgentOptions, tool
from contextfold.store import open_store
from contextfold.view import Window
from contextfold.view._render import render_openai_chat

from ._session import INSTRUCTIONS, Turn, client_session, keep_full, keep_last, masking, script, window_text
from ._session import window_tokens as tokens_of

WINDOW = 32_768
RESERVED = 4_096
BUDGET = WINDOW - RESERVED
KEEP_TURNS = 4
"""About what fits: a turn averages ~2.4k tokens of tool output, and the largest ones are ~7.5k."""
MASK_AFTER_TURNS = KEEP_TURNS
"""Observation masking (Lindenbauer et al., "The Complexity Trap", 2025, keep 10 turns' outputs with smaller ones)
keeps the outputs of as many recent turns as keep-last-N keeps whole."""


@dataclass
class Meter:
    """Every request one strategy sent."""

    tokens: list[int] = field(default_factory=list)
    over_budget: int = 0
    extending: int = 0
    summariser_tokens: int = 0
    _previous: tuple[list[ToolSpec] | None, list[dict[str, Any]]] | None = None

    def send(self, window: Window) -> None:
        sent = tokens_of(window)
        self.tokens.append(sent)
        self.over_budget += sent > BUDGET
        payload = render_openai_chat(window)
        if self._previous is not None:
            tools, messages = self._previous
            self.extending += tools == window.tools and payload[: len(messages)] == messages
        self._previous = (window.tools, payload)


@dataclass
class Outcome:
    name: str
    meter: Meter
    compactions: int
    without_recall: list[bool]
    with_recall: list[bool]
    seconds: float


def _tool_specs() -> list[ToolSpec]:
    """The tool schemas the runtime derives from the functions below, so every strategy sends the same ones."""
    return [t.spec for t in _Tools({}).functions()]


class _Tools:
    """The session's tools: each returns the scripted output for its arguments."""

    def __init__(self, outputs: dict[tuple[str, str], str]) -> None:
        self.outputs = outputs

    def functions(self) -> list[Any]:

        outputs = self.outputs

        @tool
        def read_file(path: str) -> str:
            """Read a file of the repository.

            Args:
                path: The file's path.
            """
            return outputs[("read_file", json.dumps({"path": path}))]

        @tool
        def run_tests(target: str) -> str:
            """Run a test target and return its log.

            Args:
                target: The test target.
            """
            return outputs[("run_tests", json.dumps({"target": target}))]

        @tool
        def grep(pattern: str) -> str:
            """Search the repository.

            Args:
                pattern: What to look for.
            """
            return outputs[("grep", json.dumps({"pattern": pattern}))]

        return [read_file, run_tests, grep]


class _MeteredSummariser(ExtractiveSummariser):
    """The extractive summariser, billed: what it is sent counts as input tokens of the strategy."""

    def __init__(self, meter: Meter) -> None:
        super().__init__()
        self.meter = meter

    async def _stream_once(self, window: Window, settings: ModelSettings) -> AsyncIterator[StreamEvent]:
        self.meter.summariser_tokens += tokens_of(window)
        async for event in super()._stream_once(window, settings):
            yield event


class _Brain:
    """The model's side of the script, for the runtime: the turn's calls, then its answer. Asked for a fact, it
    answers from its window, or (with recall) calls `recall` first when the fact is not there."""

    def __init__(self, meter: Meter, use_recall: bool) -> None:
        self.meter = meter
        self.use_recall = use_recall
        self.turn: Turn | None = None
        self.without_recall: list[bool] = []
        self.with_recall: list[bool] = []

    def __call__(self, window: Window) -> ModelResponse:
        self.meter.send(window)
        turn, last = self.turn, window.items[-1]
        assert turn is not None
        if turn.fact is None:
            if isinstance(last, ToolResult):
                return ModelResponse(text=turn.answer, output_tokens=12)
            calls = [ToolCallRequest("", c.name, c.arguments) for c in turn.calls]
            return ModelResponse(tool_calls=calls, output_tokens=20)
        value = turn.fact.value
        if isinstance(last, ToolResult):  # what recall found
            self.with_recall.append(value in last.output)
            return ModelResponse(text=f"It is {value}." if value in last.output else "I do not know.")
        seen = value in window_text(window)
        self.without_recall.append(seen)
        recall_offered = any(t.name == "recall" for t in window.tools or [])
        if seen or not (self.use_recall and recall_offered):
            self.with_recall.append(seen)
            return ModelResponse(text=f"It is {value}." if seen else "I do not know.")
        query = re.sub(r"^What is (the )?|\?$", "", turn.fact.question)
        return ModelResponse(tool_calls=[ToolCallRequest("", "recall", json.dumps({"query": query}))])


async def _contextfold(turns: Sequence[Turn], db: Path) -> Outcome:
    started = time.perf_counter()
    meter = Meter()
    brain = _Brain(meter, use_recall=True)
    outputs = {(c.name, c.arguments): c.output for turn in turns for c in turn.calls}
    store = await open_store(db)
    try:
        model = ScriptedModel(profile=ModelProfile(context_window=WINDOW), name="scripted")
        options = AgentOptions(
            max_output_tokens=RESERVED, policy=CompactionPolicy(), summariser=_MeteredSummariser(meter)
        )
        agent = Agent(model, store=store, instructions=INSTRUCTIONS, tools=_Tools(outputs).functions(), options=options)
        session = await agent.create_session()
        for n, turn in enumerate(turns):
            brain.turn = turn
            model.add(brain, brain)
            await session.turn(turn.ask)
            _progress("contextfold", n, len(turns))
        compactions = sum(isinstance(e, Compaction) for e in await store.read(session.id))
    finally:
        await store.close()
    return Outcome(
        "contextfold policy", meter, compactions, brain.without_recall, brain.with_recall, time.perf_counter() - started
    )


def _baseline(name: str, turns: Sequence[Turn], cut: Any) -> Outcome:
    started = time.perf_counter()
    meter = Meter()
    count = [0]

    def send(window: Window) -> None:
        meter.send(window)
        count[0] += 1
        if count[0] % 100 == 0:
            print(f"  {name}: {count[0]} requests", file=sys.stderr, flush=True)

    seen = client_session(turns, cut, send, tools=_tool_specs())
    answered = [found and over <= BUDGET for found, over in zip(seen, _question_tokens(meter, len(seen)), strict=True)]
    return Outcome(name, meter, 0, answered, answered, time.perf_counter() - started)


def _question_tokens(meter: Meter, questions: int) -> list[int]:
    """The size of each closing question's request (one request per question, the last ones sent)."""
    return meter.tokens[-questions:]


def _progress(name: str, n: int, total: int) -> None:
    if (n + 1) % 100 == 0 or n + 1 == total:
        print(f"  {name}: turn {n + 1}/{total}", file=sys.stderr, flush=True)


async def run(quick: bool) -> list[Table]:
    turns = script(200 if quick else 1_000, seed=11)
    working = sum(t.fact is None for t in turns)
    outcomes = [_baseline("full history", turns, keep_full)]
    outcomes.append(_baseline(f"keep last {KEEP_TURNS} turns", turns, keep_last(KEEP_TURNS)))
    outcomes.append(_baseline(f"observation masking (last {MASK_AFTER_TURNS} turns)", turns, masking(MASK_AFTER_TURNS)))
    with tempfile.TemporaryDirectory() as tmp:
        outcomes.append(await _contextfold(turns, Path(tmp) / "economy.db"))
    table = Table(
        f"Token economy: one {working:,}-turn agent session, 32k window (budget {BUDGET:,} tokens), 6 planted facts",
        [
            "strategy",
            "requests",
            "input tokens billed",
            "vs full history",
            "peak request",
            "mean request",
            "requests over budget",
            "prefix-extending",
            "compactions",
            "facts (window only)",
            "facts (with recall)",
            "seconds",
        ],
    )
    full = outcomes[0].meter
    full_billed = sum(full.tokens)
    for outcome in outcomes:
        meter = outcome.meter
        billed = sum(meter.tokens) + meter.summariser_tokens
        table.add(
            outcome.name,
            len(meter.tokens),
            billed,
            f"{billed / full_billed:.1%}",
            max(meter.tokens),
            round(statistics.fmean(meter.tokens)),
            meter.over_budget,
            f"{meter.extending / max(1, len(meter.tokens) - 1):.1%}",
            outcome.compactions,
            f"{sum(outcome.without_recall)}/{len(outcome.without_recall)}",
            f"{sum(outcome.with_recall)}/{len(outcome.with_recall)}",
            round(outcome.seconds, 1),
        )
    table.notes += [
        "Tokens are the engine's estimate (4 chars a token) for every strategy; contextfold's billed figure includes "
        f"what its summariser was sent ({outcomes[-1].meter.summariser_tokens:,} tokens).",
        "A fact counts as answered when its question's request fits the budget and holds the fact, or (with recall) "
        "when `recall` finds it; only contextfold keeps what it folds, so only it can recall.",
        "Prefix-extending: the Chat Completions payload (messages and tools) starts with the previous request's.",
    ]
    return [table]
