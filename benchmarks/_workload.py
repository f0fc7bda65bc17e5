"""A realistic, deterministic conversation: the log every section measures.

Each turn is what an agent loop writes: a start marker, the user's input, sometimes opaque reasoning, zero to four
model steps that each issue a parallel batch of tool calls (1-4 calls) with outputs of 0.5-4 KB, the answer, a
`Usage` event after every model request and an end marker (1% of turns are interrupted). Before every model
request the log is compacted exactly as `Conversation.fit` would: `compact(view, trigger="auto")` with the default
policy and no summariser, so the tiers run as in production (masking first, then the deterministic digest).

Everything comes from one seeded `random.Random` (ids included), so two runs with the same seed write the same
events, and events are stamped with `seq` and their token estimate as a store would hand them back.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import msgspec

from contextfold import CompactionPolicy, TokenEstimator, View
from contextfold.compaction import compact
from contextfold.events import (
    AnyEvent,
    ConfigChange,
    Event,
    Message,
    Reasoning,
    TextPart,
    ToolCall,
    ToolResult,
    ToolSpec,
    TurnMarker,
    Usage,
)

DEFAULT_BUDGET = 128_000
"""Context tokens a request may use (a 128k-token model with room left for the answer)."""
MODEL = "bench-model"
_EPOCH = 1_790_000_000.0
_TOOLS = ("read_file", "run_shell", "grep", "write_file", "list_dir")
_SYLLABLES = ("ka", "lo", "mi", "tr", "en", "sa", "qu", "or", "ix", "pe", "un", "da", "zo", "re", "ch", "at")


def _vocabulary(rng: random.Random, size: int = 4_000) -> list[str]:
    words = {"".join(rng.choices(_SYLLABLES, k=rng.randint(1, 4))) for _ in range(size)}
    return [*sorted(words), "def", "return", "import", "error", "self", "None", "class", "test", "=", "(", ")"]


class Workload:
    """Generates one conversation's events in order, folding them into `view` as it goes."""

    def __init__(self, *, seed: int = 1, compactions: bool = True, budget: int = DEFAULT_BUDGET) -> None:
        self.rng = random.Random(seed)
        self.compactions = compactions
        self.budget = budget
        self.policy = CompactionPolicy()
        self.estimator = TokenEstimator()
        self.view = View()
        self.turns = 0
        self.compaction_count = 0
        words = _vocabulary(self.rng)
        self._paragraphs = [" ".join(self.rng.choices(words, k=900)) for _ in range(256)]
        self._pending: list[AnyEvent] = []
        self._stamp(
            ConfigChange(
                system_prompt="You are a careful coding agent. " + self._text(1_500),
                tools=[ToolSpec(name, f"The {name} tool. " + self._text(200), {"type": "object"}) for name in _TOOLS],
            )
        )

    # --- building blocks ----------------------------------------------------------------------------------------

    def _id(self, prefix: str) -> str:
        return f"{prefix}_{self.rng.getrandbits(96):024x}"

    def _text(self, size: int) -> str:
        paragraph = self._paragraphs[self.rng.randrange(len(self._paragraphs))]
        start = self.rng.randrange(len(paragraph) // 2)
        return paragraph[start : start + size]

    def _stamp(self, event: Event) -> None:
        """Give the event its seq, id, time and token estimate, fold it in and queue it."""
        seq = self.view.head + 1
        tokens = event.tokens or self.estimator.estimate(event)
        stamped = msgspec.structs.replace(event, seq=seq, id=self._id("ev"), created_at=_EPOCH + seq, tokens=tokens)
        assert isinstance(stamped, AnyEvent)
        self.view.apply(stamped)
        self._pending.append(stamped)

    async def _request(self) -> int:
        """Compact if due (before a model request, as `Conversation.fit` does); the request's estimated input."""
        if self.compactions:
            event = await compact(
                self.view,
                budget=self.budget,
                policy=self.policy,
                summariser=None,
                estimator=self.estimator,
                trigger="auto",
            )
            if event is not None:
                self.compaction_count += 1
                self._stamp(event)
        return self.view.estimated_tokens

    def _usage(self, estimated: int, output_tokens: int) -> None:
        reported = int(estimated * self.rng.uniform(0.97, 1.06))
        self._stamp(
            Usage(model=MODEL, input_tokens=reported, output_tokens=output_tokens, estimated_input_tokens=estimated)
        )

    # --- turns --------------------------------------------------------------------------------------------------

    async def turn(self) -> None:
        """Append one whole turn to the pending events."""
        rng, tid = self.rng, self._id("turn")
        self.turns += 1
        self._stamp(TurnMarker(status="started", turn_id=tid))
        self._stamp(Message(role="user", content=[TextPart(self._text(rng.randint(80, 600)))], turn_id=tid))
        if rng.random() < 0.3:
            blob = f"{rng.getrandbits(2048):0512x}"
            self._stamp(Reasoning(provider="openai", data={"encrypted_content": blob}, turn_id=tid))
        interrupted = rng.random() < 0.01
        for _ in range(rng.choices((0, 1, 2, 3, 4), (10, 30, 30, 20, 10))[0]):
            estimated = await self._request()
            self._batch(tid, estimated)
            if interrupted:
                self._stamp(TurnMarker(status="interrupted", reason="user pressed stop", turn_id=tid))
                return
        estimated = await self._request()
        answer = self._text(rng.randint(100, 1_000))
        self._stamp(Message(role="assistant", content=[TextPart(answer)], turn_id=tid))
        self._usage(estimated, len(answer) // 4)
        self._stamp(TurnMarker(status="completed", turn_id=tid))

    def _batch(self, tid: str, estimated: int) -> None:
        """One model step: a parallel batch of tool calls, the request's usage, then the results."""
        rng, batch = self.rng, self._id("batch")
        calls = []
        for _ in range(rng.choices((1, 2, 3, 4), (50, 25, 15, 10))[0]):
            call_id, name = self._id("call"), rng.choice(_TOOLS)
            arguments = f'{{"path": "src/{self._text(12).replace(" ", "_")}.py", "limit": {rng.randint(1, 400)}}}'
            calls.append(ToolCall(call_id=call_id, name=name, arguments=arguments, batch_id=batch, turn_id=tid))
        for call in calls:
            self._stamp(call)
        self._usage(estimated, 40 * len(calls))
        for call in calls:
            size = rng.randint(500, 4_000)
            header = f"$ {call.name} #{rng.getrandbits(32):08x} lines {rng.randint(1, 900)}-{rng.randint(900, 2000)}\n"
            summary = f"{call.name}: {size} bytes, {size // 60} lines" if rng.random() < 0.5 else None
            error = rng.random() < 0.03
            output = header + self._text(size)
            self._stamp(ToolResult(call_id=call.call_id, output=output, summary=summary, is_error=error, turn_id=tid))

    async def take(self, count: int) -> list[AnyEvent]:
        """The next `count` events (a log can end mid-turn, as a crash would leave it)."""
        while len(self._pending) < count:
            await self.turn()
            if self.turns % 16 == 0:
                await asyncio.sleep(0)  # let appends in flight make progress while a log is generated
        taken, self._pending = self._pending[:count], self._pending[count:]
        return taken

    async def take_turns(self, count: int) -> list[AnyEvent]:
        """The events of the next `count` whole turns (plus anything still pending)."""
        for _ in range(count):
            await self.turn()
        taken, self._pending = self._pending, []
        return taken

    async def batches(self, total: int, size: int) -> AsyncIterator[list[AnyEvent]]:
        """The first `total` events, `size` at a time."""
        done = 0
        while done < total:
            batch = await self.take(min(size, total - done))
            done += len(batch)
            yield batch
