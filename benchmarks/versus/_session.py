"""The scripted agent session every context strategy of the token-economy benchmark runs, and the baselines.

One seeded script: each turn a task, one or two tool calls whose outputs are 1-30 KB (log-uniform: most outputs
are small, a few are large, as with real file reads, test runs and searches), then a short answer. Some outputs
carry a fact (a token, a port, an owner) that the last turns ask for. The script does not depend on what the
model sees, so every strategy sends the same conversation and only the windows differ.

The baselines keep the history on the client and cut it before each request, as agent frameworks do:
`full` sends everything; `keep_last` the instructions plus the last N turns; `masking` everything, with the tool
outputs of all but the last M turns replaced by a placeholder (observation masking). contextfold's policy runs
through the real runtime (economy.py).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from contextfold.events import Item, Message, TextPart, ToolCall, ToolResult, ToolSpec
from contextfold.view import TokenEstimator, Window
from contextfold.view._tokens import text_tokens, tools_tokens

INSTRUCTIONS = "You are a maintenance agent for the payments platform. Use the tools; answer briefly."
MASKED = "[tool output omitted to save context]"
_ESTIMATOR = TokenEstimator()


@dataclass(frozen=True)
class Fact:
    turn: int
    question: str
    sentence: str
    value: str


@dataclass(frozen=True)
class Call:
    name: str
    arguments: str
    output: str


@dataclass(frozen=True)
class Turn:
    ask: str
    calls: tuple[Call, ...]
    answer: str
    fact: Fact | None = None
    """Set on the closing turns that ask for a fact: no calls, the answer depends on what the model sees."""


def facts(turns: int) -> list[Fact]:
    """Six facts spread over the session, the first early (folded long before the end), the last late."""
    spots = [max(2, round(turns * share)) for share in (0.005, 0.12, 0.3, 0.55, 0.8, 0.97)]
    specs = [
        ("the deploy token of service ledger", "KIWI-2291"),
        ("the port of the fraud scorer", "PORT-47113"),
        ("the owner of the refunds queue", "OWNER-MARISOL-9"),
        ("the build id of the last green release", "BUILD-88412"),
        ("the feature flag guarding the new checkout", "FLAG-CHK-3307"),
        ("the incident number of the outage", "INC-55190"),
    ]
    return [
        Fact(turn, f"What is {what}?", f"NOTE: {what} is {value}.", value)
        for turn, (what, value) in zip(spots, specs, strict=True)
    ]


def script(turns: int, seed: int) -> list[Turn]:
    """`turns` working turns, then one question turn per fact."""
    rng = random.Random(seed)
    planted = {fact.turn: fact for fact in facts(turns)}
    out: list[Turn] = []
    for n in range(turns):
        calls = []
        for c in range(rng.choice((1, 1, 2))):
            name = rng.choice(("read_file", "run_tests", "grep"))
            size = round(math.exp(rng.uniform(math.log(1_000), math.log(30_000))))
            fact = planted.get(n) if c == 0 else None
            calls.append(_call(name, n, c, size, rng, fact))
        ask = f"Task {n}: ticket PAY-{1000 + n}, check service-{n % 23} and fix what fails."
        out.append(Turn(ask, tuple(calls), f"Done with PAY-{1000 + n}: checked {len(calls)} source(s)."))
    out += [Turn(fact.question, (), "", fact) for fact in facts(turns)]
    return out


def _call(name: str, n: int, c: int, size: int, rng: random.Random, fact: Fact | None) -> Call:
    key = {"read_file": "path", "run_tests": "target", "grep": "pattern"}[name]
    value = {"read_file": f"src/pay/mod_{n}_{c}.py", "run_tests": f"tests/test_{n}_{c}", "grep": f"PAY-{1000 + n}"}
    lines = [f"$ {name} {value[name]}"]
    while sum(len(line) + 1 for line in lines) < size:
        i = len(lines)
        lines.append(
            f"{i:05d} {rng.choice(('ok', 'ok', 'warn', 'info'))} handler_{rng.randrange(10_000)} "
            f"latency={rng.randrange(900)}ms trace={rng.getrandbits(48):012x}"
        )
    if fact is not None:
        lines.insert(len(lines) // 2, fact.sentence)
    return Call(name, json.dumps({key: value[name]}), "\n".join(lines))


# --- measuring a request ------------------------------------------------------------------------------------------


def window_tokens(window: Window) -> int:
    """Tokens of a request, the same count for every strategy (the estimate the engine budgets with)."""
    system = text_tokens(window.system_prompt or "")
    return system + tools_tokens(window.tools) + sum(_ESTIMATOR.estimate(item) for item in window.items)


def window_text(window: Window) -> str:
    parts = []
    for item in window.items:
        if isinstance(item, Message):
            parts += [p.text for p in item.content if isinstance(p, TextPart)]
        elif isinstance(item, ToolResult):
            parts.append(item.output)
    return "\n".join(parts)


# --- the baselines: the client keeps the history and cuts it before each request ---------------------------------

Cut = Callable[[list[Item]], list[Item]]


def keep_full(history: list[Item]) -> list[Item]:
    return history


def keep_last(turns: int) -> Cut:
    """The last `turns` turns (a turn opens with a user message)."""

    def cut(history: list[Item]) -> list[Item]:
        starts = [i for i, item in enumerate(history) if isinstance(item, Message) and item.role == "user"]
        return history[starts[-turns] :] if len(starts) > turns else history

    return cut


def masking(turns: int) -> Cut:
    """Every item, but the tool outputs before the last `turns` turns are a placeholder."""

    def cut(history: list[Item]) -> list[Item]:
        starts = [i for i, item in enumerate(history) if isinstance(item, Message) and item.role == "user"]
        boundary = starts[-turns] if len(starts) > turns else 0
        return [
            ToolResult(id=item.id, call_id=item.call_id, output=MASKED)
            if isinstance(item, ToolResult) and i < boundary
            else item
            for i, item in enumerate(history)
        ]

    return cut


def client_session(
    turns: Sequence[Turn], cut: Cut, send: Callable[[Window], None], *, tools: list[ToolSpec]
) -> list[bool]:
    """Run the script with the history kept by the client; `send` sees every request. Returns, per fact question,
    whether the fact was in what the model saw."""
    history: list[Item] = []
    answered: list[bool] = []

    def request() -> Window:
        window = Window(INSTRUCTIONS, tools, None, cut(history))
        send(window)
        return window

    for n, turn in enumerate(turns):
        history.append(Message(role="user", content=[TextPart(turn.ask)]))
        window = request()
        if turn.fact is not None:
            found = turn.fact.value in window_text(window)
            answered.append(found)
            said = f"It is {turn.fact.value}." if found else "I do not know."
            history.append(Message(role="assistant", content=[TextPart(said)]))
            continue
        batch = f"batch_{n}"
        calls = [
            ToolCall(call_id=f"call_{n}_{c}", name=x.name, arguments=x.arguments, batch_id=batch)
            for c, x in enumerate(turn.calls)
        ]
        history += calls
        history += [
            ToolResult(call_id=call.call_id, output=x.output) for call, x in zip(calls, turn.calls, strict=True)
        ]
        request()
        history.append(Message(role="assistant", content=[TextPart(turn.answer)]))
    return answered
