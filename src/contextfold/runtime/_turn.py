"""One turn: inference and tool execution alternate until the model answers without tool calls.

Everything a turn does is appended to the log at step boundaries as it happens (the turn's start and input, each
inference's answer and usage, each tool step's results), so a crash leaves the completed steps in the log; the turn
stays open there, and the next process to load the session marks it interrupted, which takes it out of the view.
A failure or an interruption is marked at once. Nothing here is shared between turns: a turn owns its
conversation object for its duration, and the store orders appends per conversation.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from .._conversation import Conversation
from .._errors import ConflictError, ContextLengthError, ContextOverflowError
from ..compaction import CompactionPolicy, CompactionResult, compaction_due
from ..events import (
    Event,
    Message,
    Part,
    Reasoning,
    TextPart,
    TokenUsage,
    ToolCall,
    ToolResult,
    TurnMarker,
    Usage,
    new_id,
)
from ..models import (
    Model,
    ModelResponse,
    ModelSettings,
    ResponseDone,
    StreamingModel,
    TextChunk,
    ToolCallChunk,
    ToolCallRequest,
    ToolCallStart,
    checks_grammar,
    close,
)
from ..view import View
from ..view._grammar import send_check
from ..view._tokens import tools_tokens
from ._events import (
    InferenceResult,
    StepCompleted,
    StepProgress,
    StepStarted,
    TextDelta,
    ToolCallCompletedDelta,
    ToolCallDelta,
    ToolCallIssuedDelta,
    ToolCallStartedDelta,
    ToolExecutionResult,
    ToolOutcome,
    TurnCompleted,
    TurnError,
    TurnEvent,
    TurnFailed,
    TurnStarted,
)
from ._guard import TurnGuard, blocked_turn, input_texts
from ._tools import Tool
from ._traced import traced

log = logging.getLogger("contextfold.runtime")

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


@dataclass(frozen=True, slots=True)
class TurnSetup:
    """Everything a turn reads; built fresh for each turn, never shared mutable state."""

    session_id: str
    conversation: Conversation
    model: Model
    summariser: Model | None
    """None: deterministic compaction only (masking, then the digest)."""
    tools: Mapping[str, Tool]
    builtins: Sequence[Tool]
    """Server-side tools offered once the conversation has been compacted (recall, expand)."""
    policy: CompactionPolicy
    budget: int
    max_output_tokens: int
    max_steps: int
    tool_timeout: float
    settings: ModelSettings = field(default_factory=ModelSettings)
    """Sampling and tool-choice settings for every inference; `max_output_tokens` comes from the field above."""
    compact: bool = True
    """False: never compact (a server request said `truncation: disabled`); a view over budget fails the turn."""
    context_window: int | None = None
    """The model's window that `budget` was taken from, recorded with each request's usage (None: not known)."""
    hosted: Sequence[Tool] = ()
    """Server-side tools offered on every inference (file_search, MCP tools): the runtime runs them itself."""
    deferred: frozenset[str] = frozenset()
    """Tools the caller runs itself (the server's function tools): a call to one ends the turn, and its result
    arrives as input of the next turn."""
    guard: TurnGuard | None = None
    """Guardrails: the input is checked before the model is called, each answer before it is stored."""


@dataclass(frozen=True, slots=True)
class _Answer:
    response: ModelResponse
    events: list[Event]


class _Refused(Exception):
    """The provider refused the window as too long before streaming anything: compact and try again."""

    def __init__(self, error: ContextLengthError) -> None:
        self.error = error


def run_turn(setup: TurnSetup, turn_id: str, content: Sequence[Part | Event]) -> AsyncIterator[TurnEvent]:
    """Run one turn. `content` is the user's message as parts, or the input as events (messages of any role,
    results of deferred calls), which are appended under the turn's id. Traced: see `_traced`."""
    return traced(setup, turn_id, _run_turn(setup, turn_id, content))


async def _run_turn(setup: TurnSetup, turn_id: str, content: Sequence[Part | Event]) -> AsyncGenerator[TurnEvent, None]:
    conv = setup.conversation
    parts = [c for c in content if not isinstance(c, Event)]
    given = [msgspec.structs.replace(c, turn_id=turn_id) for c in content if isinstance(c, Event)]
    if parts:
        given.append(Message(role="user", content=parts, turn_id=turn_id))
    yield TurnStarted(turn_id, setup.session_id)
    steps = inferences = 0
    used = TokenUsage()
    retried = False
    compacted_at = -1
    try:
        await conv.append(TurnMarker(status="started", turn_id=turn_id), *given)
        if setup.guard is not None and (blocked := await setup.guard.check_input(input_texts(given))):
            async for event in blocked_turn(conv, turn_id, blocked, model=setup.model.name, steps=0, used=used):
                yield event
            return
        held = setup.guard is not None and setup.guard.checks_output
        while True:
            builtins = [*setup.hosted, *(setup.builtins if conv.view.totals.compactions else [])]
            budget = setup.budget - tools_tokens([t.spec for t in builtins])
            due = setup.compact and compaction_due(conv.view, budget=budget, policy=setup.policy)
            if due and conv.view.head != compacted_at:
                steps += 1
                # Compacted, the view offers the built-in tools: it must fit the budget that leaves for them.
                after = setup.budget - tools_tokens([t.spec for t in [*setup.hosted, *setup.builtins]])
                async for event in _compaction_step(setup, turn_id, after, "auto"):
                    yield event
                compacted_at = conv.view.head  # once per step: a view still over the threshold goes as it is
                continue  # the compaction may have made the built-in tools available
            if conv.view.tokens > budget:
                raise ContextOverflowError(
                    f"the view needs ~{conv.view.tokens} tokens, over the {budget}-token budget, and "
                    + (
                        "the policy did not compact it; lower the compaction threshold"
                        if setup.compact
                        else "compaction is off for this request (truncation 'disabled'); allow it with 'auto'"
                    )
                )
            steps += 1
            inferences += 1
            step_id = new_id("step")
            yield StepStarted(step_id, "inference", turn_id, {"model": setup.model.name})
            response: ModelResponse | None = None
            answer: list[Event] = []
            progress: list[TurnEvent] = []  # an answer's deltas, held until it passes the output check
            try:
                async for produced in _inference(setup, turn_id, step_id, builtins):
                    if isinstance(produced, _Answer):
                        response, answer = produced.response, produced.events
                    elif held and isinstance(produced, StepProgress):
                        progress.append(produced)
                    else:
                        yield produced
            except _Refused as refused:
                yield StepCompleted(step_id, "inference", _failed_inference(setup, refused.error))
                if retried or not setup.compact:
                    raise refused.error from None
                retried = True
                steps += 1
                try:
                    async for event in _compaction_step(setup, turn_id, int(conv.view.tokens * setup.policy.target)):
                        yield event
                except ContextOverflowError as overflow:
                    raise refused.error from overflow  # the provider's words, and why we could not shrink further
                continue
            assert response is not None
            used = TokenUsage(used.input_tokens + response.input_tokens, used.output_tokens + response.output_tokens)
            if held and response.text and setup.guard and (blocked := await setup.guard.check_output(response.text)):
                # the answer is never stored nor shown; what it cost is
                spent = [e for e in answer if isinstance(e, Usage)]
                hidden = dataclasses.replace(response, text="", tool_calls=[], stop_reason="content_filter")
                yield StepCompleted(step_id, "inference", _inference_result(setup, hidden))
                async for event in blocked_turn(
                    conv, turn_id, blocked, model=setup.model.name, steps=steps, used=used, also=spent
                ):
                    yield event
                return
            for event in progress:
                yield event
            # a library agent's own server-side tools (file_search, MCP) run in the server-side step too
            runs_here = {t.name for t in builtins} | {n for n, t in setup.tools.items() if t.server_side}
            # a server-side tool the caller must approve first waits like a deferred one
            server = [c for c in response.tool_calls if c.name in runs_here and c.name not in setup.deferred]
            deferred = [c for c in response.tool_calls if c not in server and c.name in setup.deferred]
            client = [c for c in response.tool_calls if c not in server and c not in deferred]
            reason = _INCOMPLETE.get(response.stop_reason) if not response.tool_calls else None
            if not server and not client:  # the answer ends the turn: store both in one transaction
                await conv.append(*answer, TurnMarker(status="completed", turn_id=turn_id, reason=reason))
                yield StepCompleted(step_id, "inference", _inference_result(setup, response))
                yield TurnCompleted(turn_id, response.text, steps, used, reason, deferred)
                return
            await conv.append(*answer)
            yield StepCompleted(step_id, "inference", _inference_result(setup, response))
            for group, server_side in ((server, True), (client, False)):
                if group:
                    steps += 1
                    async for event in _tool_step(setup, turn_id, group, server_side, builtins):
                        yield event
            if deferred:  # the caller runs these and sends their results as the next turn's input
                await conv.append(TurnMarker(status="completed", turn_id=turn_id))
                yield TurnCompleted(turn_id, response.text, steps, used, None, deferred)
                return
            if inferences >= setup.max_steps:
                await conv.append(TurnMarker(status="completed", turn_id=turn_id, reason="max_steps"))
                yield TurnCompleted(turn_id, response.text, steps, used, "max_steps")
                return
    except Exception as exc:
        try:
            await mark_turn(conv, turn_id, "failed", f"{type(exc).__name__}: {exc}")
        except Exception as marking:  # the store failed too: the turn stays open, to be marked interrupted when
            # its conversation is next held (invariant 3 holds either way); the caller still learns why it failed
            log.warning("could not mark turn %s failed: %s", turn_id, marking)
        yield TurnFailed(turn_id, TurnError(type(exc).__name__, str(exc)), exception=exc)


async def mark_turn(conv: Conversation, turn_id: str, status: Literal["failed", "interrupted"], reason: str) -> None:
    """End the turn in the log as failed or interrupted, even if an append of the turn was cut off half-way."""
    # An append whose caller was cancelled may have been stored without reaching the view: catch up first.
    await conv.refresh()
    for _ in range(3):
        if turn_id not in conv.view.open_turns:
            return  # never started, or it ended (an answer and its end marker may have landed just now)
        try:
            await conv.append(TurnMarker(status=status, turn_id=turn_id, reason=reason))
            return
        except ConflictError:
            await conv.refresh()


async def _compaction_step(
    setup: TurnSetup, turn_id: str, budget: int, trigger: Literal["auto", "reactive"] = "reactive"
) -> AsyncIterator[TurnEvent]:
    step_id, event_id = new_id("step"), new_id()
    yield StepStarted(step_id, "compaction", turn_id, {"trigger": trigger, "compaction_id": event_id})
    conv = setup.conversation
    result: CompactionResult
    if trigger == "auto":
        result = await conv.fit(budget=budget, policy=setup.policy, summariser=setup.summariser, event_id=event_id)
    else:
        result = await conv.compact(
            budget=max(1, budget),
            policy=setup.policy,
            summariser=setup.summariser,
            trigger="reactive",
            event_id=event_id,
        )
    yield StepCompleted(step_id, "compaction", result)


async def _inference(
    setup: TurnSetup, turn_id: str, step_id: str, builtins: Sequence[Tool]
) -> AsyncIterator[TurnEvent | _Answer]:
    """Stream one model answer as progress events, and end with it and the events that record it (which the
    caller appends: with the turn's end marker when the answer ends the turn, one transaction instead of two)."""
    conv = setup.conversation
    window = conv.window()
    if builtins:
        window = dataclasses.replace(window, tools=[*(window.tools or []), *(t.spec for t in builtins)])
    if not isinstance(setup.model, StreamingModel):  # a StreamingModel checks every request itself (invariant 6)
        grammar = setup.model.violations if checks_grammar(setup.model) else None
        window = send_check(window, grammar, type(setup.model).__name__, where=conv.id)
    estimated = conv.view.estimated_tokens + tools_tokens([t.spec for t in builtins])  # as the provider counts
    settings = dataclasses.replace(setup.settings, max_output_tokens=setup.max_output_tokens)
    taken = _Taken(conv.view)
    calls: dict[int, str] = {}  # stream index -> the call id the log will use
    item_ids: dict[int, str] = {}  # stream index -> the call's event id, announced before the event exists
    message_id = new_id()
    response: ModelResponse | None = None
    streamed = False
    stream = setup.model.stream(window, settings)
    try:
        async for chunk in stream:
            if isinstance(chunk, TextChunk):
                if not chunk.text:
                    continue
                streamed = True
                yield StepProgress(step_id, TextDelta(chunk.text, message_id))
            elif isinstance(chunk, ToolCallStart):
                calls[chunk.index] = _fresh_id(chunk.call_id, taken)
                item_ids[chunk.index] = new_id()
                streamed = True
                yield StepProgress(step_id, ToolCallStartedDelta(calls[chunk.index], chunk.name, item_ids[chunk.index]))
            elif isinstance(chunk, ToolCallChunk):
                streamed = True
                yield StepProgress(step_id, ToolCallDelta(calls.get(chunk.index, ""), chunk.arguments))
            elif isinstance(chunk, ResponseDone):
                response = chunk.response
    except ContextLengthError as error:
        if streamed:
            raise
        raise _Refused(error) from error
    finally:
        await close(stream)  # an interrupted turn lets go of the provider's connection at once
    assert response is not None  # the model seam guarantees a stream ends with ResponseDone or raises
    response = _unique_call_ids(response, [calls[i] for i in sorted(calls)], taken)
    for call in response.tool_calls:
        yield StepProgress(step_id, ToolCallIssuedDelta(call.call_id, call.name, call.arguments))
    batch = new_id("batch")
    events: list[Event] = [
        Reasoning(provider=r.provider, data=r.data, text=r.text, turn_id=turn_id) for r in response.reasoning
    ]
    if response.text:
        events.append(Message(id=message_id, role="assistant", content=[TextPart(response.text)], turn_id=turn_id))
    ids = [item_ids[i] for i in sorted(item_ids)]
    if len(ids) != len(response.tool_calls):
        ids = [new_id() for _ in response.tool_calls]
    events += [
        ToolCall(id=i, call_id=c.call_id, name=c.name, arguments=c.arguments, batch_id=batch, turn_id=turn_id)
        for i, c in zip(ids, response.tool_calls, strict=True)
    ]
    events.append(
        Usage(
            model=response.model or setup.model.name,
            input_tokens=response.input_tokens,
            output_tokens=response.output_tokens,
            cached_input_tokens=response.cached_input_tokens,
            estimated_input_tokens=estimated if response.input_tokens else None,
            context_window=setup.context_window,
            budget=setup.budget if setup.context_window is not None else None,
            turn_id=turn_id,
        )
    )
    yield _Answer(response, events)


async def _tool_step(
    setup: TurnSetup, turn_id: str, calls: list[ToolCallRequest], server_side: bool, builtins: Sequence[Tool]
) -> AsyncIterator[TurnEvent]:
    """Run one batch's calls in parallel, report each result as it lands, append them all in call order."""
    step_id = new_id("step")
    tools = setup.tools
    if server_side:
        tools = {**{n: t for n, t in setup.tools.items() if t.server_side}, **{t.name: t for t in builtins}}
    types = [tools[c.name].tool_type if c.name in tools else "function" for c in calls]
    metadata = {
        "server_side": server_side,
        "tools": [c.name for c in calls],
        "tool_types": types,
        "tool_type": types[0] if len(set(types)) == 1 else "mixed",
    }
    yield StepStarted(step_id, "tool_execution", turn_id, metadata)
    tasks = [asyncio.ensure_future(_run_call(tools, call, setup.tool_timeout)) for call in calls]
    outcomes: dict[str, ToolOutcome] = {}
    try:
        for finished in asyncio.as_completed(tasks):
            outcome = await finished
            outcomes[outcome.call_id] = outcome
            yield StepProgress(
                step_id, ToolCallCompletedDelta(outcome.call_id, outcome.tool_name, outcome.output, outcome.is_error)
            )
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
    results = [outcomes[c.call_id] for c in calls]
    await setup.conversation.append(
        *(
            ToolResult(call_id=r.call_id, output=r.output, is_error=r.is_error, summary=r.summary, turn_id=turn_id)
            for r in results
        )
    )
    yield StepCompleted(step_id, "tool_execution", ToolExecutionResult(calls, results))


async def _run_call(tools: Mapping[str, Tool], call: ToolCallRequest, time_limit: float) -> ToolOutcome:
    found = tools.get(call.name)
    if found is None:
        known = ", ".join(sorted(tools)) or "none"
        return ToolOutcome(call.call_id, call.name, f"unknown tool {call.name!r}; available: {known}", is_error=True)
    return await found.run(call, time_limit=time_limit)


class _Taken(set[str]):
    """The call ids a new call must not reuse: those in the view (its calls index, not a scan) and those given in
    this inference, and, once anything has been folded, every id (the folded calls are still in the log and in the
    histories clients send back, which the view no longer shows)."""

    def __init__(self, view: View) -> None:
        super().__init__()
        self.in_view = view.calls
        self.folded = bool(view.covers)

    def __contains__(self, call_id: object) -> bool:
        return self.folded or call_id in self.in_view or super().__contains__(call_id)


def _fresh_id(call_id: str, taken: set[str]) -> str:
    """The provider's call id, unless it is empty or already used in the view (some local servers number calls
    `call_0`, `call_1` in every answer): then one of ours, so every call in a window is answered exactly once."""
    if not call_id or call_id in taken:
        call_id = new_id("call")
    taken.add(call_id)
    return call_id


def _unique_call_ids(response: ModelResponse, streamed: list[str], taken: set[str]) -> ModelResponse:
    """The response's calls under the ids already given to them while streaming (or fresh ones)."""
    if len(streamed) == len(response.tool_calls):
        ids = streamed
    else:  # an adapter that announced calls differently from its final answer: decide the ids now
        ids = [_fresh_id(call.call_id, taken) for call in response.tool_calls]
    calls = [dataclasses.replace(call, call_id=i) for call, i in zip(response.tool_calls, ids, strict=True)]
    return dataclasses.replace(response, tool_calls=calls)


def _inference_result(setup: TurnSetup, response: ModelResponse) -> InferenceResult:
    return InferenceResult(
        text=response.text,
        tool_calls=response.tool_calls,
        stop_reason=response.stop_reason,
        usage=TokenUsage(response.input_tokens, response.output_tokens),
        model=response.model or setup.model.name,
    )


def _failed_inference(setup: TurnSetup, error: Exception) -> InferenceResult:
    return InferenceResult("", [], "error", TokenUsage(), setup.model.name, error=f"{type(error).__name__}: {error}")
