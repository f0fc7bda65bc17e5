"""`contextfold simulate`: a long scripted agent session through the runtime, on a real store, with a report.

The agent's tools return 0.5-4 KB outputs, one to three per turn; an early turn plants a fact that is folded away
long before the end, and the last turn asks for it: the scripted agent calls the built-in `recall` tool and answers
from what it finds.
Every window sent is audited: within the budget, under the compaction threshold, valid for four wire APIs. The
summariser is an extractive one (no model needed): it keeps the lines of the transcript that carry identifiers, in
the structured sections the real summary prompt asks for.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from .._errors import InvalidRequestError
from ..compaction import CompactionPolicy
from ..events import ITEM_TYPES, Compaction, Message, ToolCall, ToolResult, text_of
from ..models import (
    ModelProfile,
    ModelResponse,
    ModelSettings,
    ResponseDone,
    ScriptedModel,
    StreamEvent,
    StreamingModel,
    ToolCallRequest,
)
from ..runtime import Agent, AgentOptions, Session, ToolOutput
from ..store import Store, open_store
from ..view import DEFAULT_CHARS_PER_TOKEN, Window
from ..view._grammar import WIRE_APIS, check
from ..view._tokens import tools_tokens

FACT = "the staging database password is TANGERINE-4471"
_IDENTIFIER = re.compile(r"\d")
"""A line that names something by a number (a path, a version, an id). `\\b[\\w./-]*\\d[\\w./-]*\\b` finds a match
exactly when the line holds a digit, and tried at every position of a long line it took time quadratic in it."""


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
    requests: int = 0
    over_threshold: int = 0
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
            ("model requests", f"{self.requests}"),
            ("events in the log", f"{self.events}"),
            ("compactions", ", ".join(f"{k}: {v}" for k, v in sorted(self.compactions.items())) or "none"),
            ("peak window utilisation", f"{self.peak_utilisation:.0%} of the budget"),
            ("requests over the threshold", f"{self.over_threshold}"),
            ("input tokens sent", f"{self.tokens_sent:,}"),
            ("…if the full history were sent", f"{self.tokens_full_history:,} ({saved:.0%} saved)"),
            ("views grammar-checked", f"{self.grammar_checks} (4 APIs each)"),
            ("fact from turn 3 recalled", "yes" if self.recall_found else "NO"),
            ("cold load from the store", f"{self.cold_load_ms:.1f} ms"),
            ("wall time", f"{self.seconds:.1f} s"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


class ExtractiveSummariser(StreamingModel):
    """A model-free summariser: the lines with identifiers, under the sections the summary prompt asks for, newest
    first within the output limit it is given (as a real model is)."""

    provider_name = "extractive"

    def __init__(self) -> None:
        super().__init__("extractive", profile=ModelProfile())

    async def _stream_once(self, window: Window, settings: ModelSettings) -> AsyncIterator[StreamEvent]:
        text = "\n".join(getattr(part, "text", "") for item in window.items for part in getattr(item, "content", []))
        previous = re.search(r"<previous-summary>\n(.*?)\n</previous-summary>", text, re.S)
        lines = [ln for ln in text.splitlines() if ln.startswith("[user]") and _IDENTIFIER.search(ln)]
        kept = (previous.group(1).splitlines()[-20:] if previous else []) + [ln[:160] for ln in lines[-20:]]
        head = "## Goal\nWork through the maintenance tasks.\n## Identifiers\n"
        room = (settings.max_output_tokens or 1_000) * DEFAULT_CHARS_PER_TOKEN * 0.8 - len(head)
        chosen: list[str] = []
        for line in reversed(kept[-30:]):
            if sum(len(c) + 1 for c in chosen) + len(line) + 1 > room:
                break
            chosen.insert(0, line)
        summary = head + "\n".join(chosen)
        yield ResponseDone(ModelResponse(text=summary, input_tokens=len(text) // 4, output_tokens=len(summary) // 4))


class _Brain:
    """The scripted model's side of the session, a function of the window it is sent: tool calls for each task,
    then a short answer; for the last question, a recall of the fact planted at turn 3, then the answer from
    what recall found. It audits every window on the way: budget, threshold, and the grammar of four wire APIs."""

    def __init__(self, rng: random.Random, report: Report, budget: int, threshold: float) -> None:
        self.rng = rng
        self.report = report
        self.budget = budget
        self.threshold = threshold
        self.session: Session | None = None

    def __call__(self, window: Window) -> ModelResponse:
        assert self.session is not None
        view = self.session.conversation.view
        sent = view.tokens + tools_tokens(window.tools) - tools_tokens(view.tools)  # plus any built-in tools
        for api in WIRE_APIS:
            check(window, api)
        report = self.report
        report.grammar_checks += 1
        report.requests += 1
        report.peak_utilisation = max(report.peak_utilisation, sent / self.budget)
        report.over_threshold += sent > self.threshold * self.budget
        report.tokens_sent += sent
        last = window.items[-1]
        if isinstance(last, ToolResult):
            recalled = [i for i in window.items if isinstance(i, ToolCall) and i.name == "recall"]
            if recalled and recalled[-1].call_id == last.call_id:
                found = "TANGERINE-4471" in last.output
                answer = "The password is TANGERINE-4471." if found else "I could not find it."
                return ModelResponse(text=answer, input_tokens=sent, output_tokens=8)
            return ModelResponse(text="done", input_tokens=sent, output_tokens=2)
        if isinstance(last, Message) and text_of(last).endswith("?"):
            return ModelResponse(tool_calls=[ToolCallRequest("", "recall", _RECALL)], input_tokens=sent)
        calls = [
            ToolCallRequest("", "run", f'{{"cmd": "check {report.requests}.{i}"}}')
            for i in range(self.rng.randint(1, 3))
        ]
        return ModelResponse(tool_calls=calls, input_tokens=sent, output_tokens=12)


_RECALL = '{"query": "staging database password"}'


async def simulate(options: SimulationOptions) -> Report:
    started = time.perf_counter()
    rng = random.Random(options.seed)
    report = Report()
    policy = CompactionPolicy()
    budget = options.window - options.reserved_output
    brain = _Brain(rng, report, budget, policy.threshold)

    def run(cmd: str) -> ToolOutput:
        """Run a maintenance command.

        Args:
            cmd: The command line.
        """
        lines = random.Random(f"{options.seed} {cmd}").randint(40, 340)  # per call: a batch's calls run in parallel
        output = f"output of {cmd}\n" + "log line ok\n" * lines
        return ToolOutput(output, summary=f"run {cmd}: ok")

    store = await open_store(options.db)
    try:
        model = ScriptedModel(profile=ModelProfile(context_window=options.window), name="simulated")
        agent = Agent(
            model,
            store=store,
            instructions="You are a maintenance agent. Use tools; be brief.",
            tools=[run],
            options=AgentOptions(
                max_output_tokens=options.reserved_output,
                policy=policy,
                summariser=ExtractiveSummariser(),
            ),
        )
        session = brain.session = await agent.create_session()
        report.conversation_id = session.id
        history, seen = 0, 0
        for n in range(options.turns):
            if n == options.turns - 1:
                ask = "What is the staging database password?"
            else:
                ask = FACT if n == 3 else f"task {n}: inspect service-{n % 17} and fix ticket T-{1000 + n}"
            model.add(brain, brain)
            requests = report.requests
            result = await session.turn(ask)
            # What sending the full history instead would have cost (counted at the end of each turn).
            for event in await store.read(session.id, after=seen):
                if isinstance(event, ITEM_TYPES):
                    history += event.tokens
            seen = session.conversation.head
            report.tokens_full_history += history * (report.requests - requests)
            report.recall_found = "TANGERINE-4471" in result.final_text
        status = await session.status()
        report.compactions = await _compactions(store, session.id)
        report.turns = options.turns
        report.events = status.conversation_length
        load_started = time.perf_counter()
        await agent.session(session.id)
        report.cold_load_ms = (time.perf_counter() - load_started) * 1000
        report.seconds = time.perf_counter() - started
        return report
    finally:
        await store.close()


async def _compactions(store: Store, conversation_id: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for event in await store.read(conversation_id):
        if isinstance(event, Compaction):
            counts[event.strategy] = counts.get(event.strategy, 0) + 1
    return counts
