"""`contextfold simulate`: a long scripted agent session through the engine, on a real store, with a report.

The agent's tools return 1-8 KB outputs; an early turn plants a fact that is folded away long before the end,
and the last turn must find it again through recall. The summariser is an extractive one (no model needed): it keeps
the lines of the transcript that carry identifiers, in the structured sections the real summary prompt asks for.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field

from .._conversation import Conversation
from .._errors import InvalidRequestError
from ..compaction import CompactionPolicy
from ..events import ConfigChange, Event, ToolCall, ToolResult, TurnMarker, Usage, assistant, new_id, user
from ..models import ModelResponse, ScriptedModel
from ..store import open_store
from ..view import Window
from ..view._grammar import WIRE_APIS, check

FACT = "the staging database password is TANGERINE-4471"
_IDENTIFIER = re.compile(r"\b[\w./-]*\d[\w./-]*\b")


@dataclass(frozen=True, slots=True)
class SimulationOptions:
    db: str = "contextfold.db"
    turns: int = 300
    window: int = 16_000
    reserved_output: int = 1_000
    seed: int = 7

    def __post_init__(self) -> None:
        if self.turns < 10:
            raise InvalidRequestError(f"--turns must be at least 10 (the fact is planted at turn 3), got {self.turns}")
        if self.window < 4_000:
            raise InvalidRequestError(f"--window must be at least 4000 tokens, got {self.window}")


@dataclass(slots=True)
class Report:
    conversation_id: str = ""
    turns: int = 0
    events: int = 0
    compactions: dict[str, int] = field(default_factory=dict)
    peak_utilisation: float = 0.0
    tokens_sent: int = 0
    tokens_full_history: int = 0
    grammar_checks: int = 0
    recall_found: bool = False
    cold_load_ms: float = 0.0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.recall_found and self.peak_utilisation <= 1.0

    def table(self) -> str:
        saved = 1 - self.tokens_sent / self.tokens_full_history if self.tokens_full_history else 0.0
        rows = [
            ("conversation", self.conversation_id),
            ("turns", f"{self.turns}"),
            ("events in the log", f"{self.events}"),
            ("compactions", ", ".join(f"{k}: {v}" for k, v in sorted(self.compactions.items())) or "none"),
            ("peak window utilisation", f"{self.peak_utilisation:.0%} of the budget"),
            ("input tokens sent", f"{self.tokens_sent:,}"),
            ("…if the full history were sent", f"{self.tokens_full_history:,} ({saved:.0%} saved)"),
            ("views grammar-checked", f"{self.grammar_checks} (4 APIs each)"),
            ("fact from turn 3 recalled", "yes" if self.recall_found else "NO"),
            ("cold load from the store", f"{self.cold_load_ms:.1f} ms"),
            ("wall time", f"{self.seconds:.1f} s"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def extractive_summary(window: Window) -> ModelResponse:
    """A model-free summariser: the lines with identifiers, under the sections the summary prompt asks for."""
    text = "\n".join(getattr(part, "text", "") for item in window.items for part in getattr(item, "content", []))
    previous = re.search(r"<previous-summary>\n(.*?)\n</previous-summary>", text, re.S)
    lines = [ln for ln in text.splitlines() if ln.startswith("[user]") and _IDENTIFIER.search(ln)]
    kept = (previous.group(1).splitlines()[-20:] if previous else []) + [ln[:160] for ln in lines[-20:]]
    summary = "## Goal\nWork through the maintenance tasks.\n## Identifiers\n" + "\n".join(kept[-30:])
    return ModelResponse(text=summary, input_tokens=len(text) // 4, output_tokens=len(summary) // 4)


def _turn(rng: random.Random, n: int) -> tuple[list[Event], list[Event]]:
    tid = new_id("turn")
    ask = FACT if n == 3 else f"task {n}: inspect service-{n % 17} and fix ticket T-{1000 + n}"
    head: list[Event] = [TurnMarker(status="started", turn_id=tid), user(ask, turn_id=tid)]
    batch = new_id("batch")
    calls = [
        ToolCall(
            call_id=new_id("call"), name="run", arguments=f'{{"cmd": "check {n}.{i}"}}', batch_id=batch, turn_id=tid
        )
        for i in range(rng.randint(1, 3))
    ]
    results: list[Event] = [
        ToolResult(
            call_id=c.call_id,
            output=f"output of {c.arguments}\n" + "log line ok\n" * rng.randint(80, 680),
            summary=f"{c.name} {c.arguments}: ok",
            turn_id=tid,
        )
        for c in calls
    ]
    return head, [
        *calls,
        *results,
        assistant(f"done with task {n}", turn_id=tid),
        TurnMarker(status="completed", turn_id=tid),
    ]


async def simulate(options: SimulationOptions) -> Report:
    started = time.perf_counter()
    rng = random.Random(options.seed)
    budget = options.window - options.reserved_output
    store = await open_store(options.db)
    try:
        conv = await Conversation.create(store, model="simulated")
        summariser = ScriptedModel([extractive_summary] * (options.turns * 2), name="extractive")
        policy = CompactionPolicy()
        report = Report(conversation_id=conv.id)
        await conv.append(ConfigChange(system_prompt="You are a maintenance agent. Use tools; be brief."))
        full_history = 0
        for n in range(options.turns):
            head, rest = _turn(rng, n)
            await conv.append(*head)
            for chunk in (head, rest):
                full_history += sum(conv.estimator.estimate(e) for e in chunk)
            await conv.fit(budget=budget, policy=policy, summariser=summariser)
            await conv.append(*rest)
            result = await conv.fit(budget=budget, policy=policy, summariser=summariser)
            if result.compacted and result.strategy:
                report.compactions[result.strategy] = report.compactions.get(result.strategy, 0) + 1
            estimated = conv.view.tokens
            for api in WIRE_APIS:
                check(conv.window(), api)
            report.grammar_checks += 1
            await conv.append(
                Usage(model="simulated", input_tokens=estimated, output_tokens=8, estimated_input_tokens=estimated)
            )
            report.peak_utilisation = max(report.peak_utilisation, estimated / budget)
            report.tokens_sent += estimated
            report.tokens_full_history += full_history
        report.recall_found = any(
            "TANGERINE-4471" in hit.snippet for hit in await conv.recall("staging database password")
        )
        report.turns = options.turns
        report.events = conv.head
        load_started = time.perf_counter()
        await Conversation.load(store, conv.id)
        report.cold_load_ms = (time.perf_counter() - load_started) * 1000
        report.seconds = time.perf_counter() - started
        return report
    finally:
        await store.close()
