"""The one turn lifecycle: what the library's `Session`, the Responses service and the proxy all do around a turn.

    budget = turn_budget(window, reserved, param="max_output_tokens")  # the one budget check and its 4xx
    setup = turn_setup(conversation, model, budget=budget, ...)          # the one TurnSetup builder
    run = TurnRun(setup, content, caller, lease=held, interrupted="...")
    task = run.start()                 # the turn's own task, created before any await (a session's claim on it)
    async for out in run.events(): ... # what `caller` made of the turn's events; closed early, it cancels the turn

The caller hands in what differs (a `TurnCaller`: how turn events become its wire events, what it records at the
end); the lifecycle owns the task, the queue, the cancel, and the wind-up: an interrupted turn is marked in the
log under `asyncio.shield` (whole and in order however often the task is cancelled meanwhile), then the lease is
released, the stream ends, and `after_turn(setup)` runs (compaction off the request path hooks in there).

With `stage=True` (the server's callers) the turn's appends are staged (`Conversation.stage`) and written in as few
transactions as crash safety allows: what is staged is flushed as a step starts, before it runs (the input is
stored before the model is asked, a long tool wait leaves the finished steps stored, and recall, expand and a
compaction's plan read the store), and the caller's `end` (or `interrupted`) flushes the rest, the answer and its
end marker, with its records and the lease release (`TurnRun.turn_events` is what it builds them from). Whatever a
caller left staged is flushed after a cancel (the interrupted marker with it) and dropped after a failure, so
nothing half-written stays behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Generic, Protocol, TypeVar

from .._conversation import Conversation
from .._errors import InvalidRequestError
from ..compaction import CompactionPolicy
from ..events import AnyEvent, Event, Part, new_id
from ..models import Model, ModelSettings
from ..store import ResponseRecord
from ._builtin import builtin_tools
from ._events import StepStarted, TurnCompleted, TurnEvent, TurnFailed
from ._guard import TurnGuard
from ._tools import Tool
from ._turn import TurnSetup, mark_turn, run_turn

log = logging.getLogger("contextfold.runtime")

Out = TypeVar("Out")
Out_co = TypeVar("Out_co", covariant=True)
Emit = Callable[[Out], None]


def turn_budget(context_window: int, reserved: int, *, param: str) -> int:
    """The view's budget: the window less the output reserved for the answer. `param` names what the caller's
    user sets (`max_output_tokens`, `max_tokens`), so the error says what to lower."""
    budget = context_window - reserved
    if budget <= 0:
        raise InvalidRequestError(
            f"{param} {reserved} leaves no room for input in the model's {context_window}-token window; lower {param}",
            param=param,
        )
    return budget


def turn_setup(
    conversation: Conversation,
    model: Model,
    *,
    budget: int,
    reserved: int,
    policy: CompactionPolicy,
    summariser: Model | None,
    max_steps: int,
    tool_timeout: float,
    context_window: int | None,
    settings: ModelSettings | None = None,
    tools: Mapping[str, Tool] | None = None,
    hosted: Sequence[Tool] = (),
    withheld: frozenset[str] = frozenset(),
    expand_tokens: int = 4_000,
    compact: bool = True,
    deferred: frozenset[str] = frozenset(),
    guard: TurnGuard | None = None,
) -> TurnSetup:
    """A turn's setup, the same for every caller. `withheld`: built-in tools not offered (a client's own tool of
    that name wins); `expand_tokens` is capped at a quarter of the budget."""
    builtins = [
        tool
        for tool in builtin_tools(conversation, expand_tokens=min(expand_tokens, budget // 4))
        if tool.name not in withheld
    ]
    return TurnSetup(
        session_id=conversation.id,
        conversation=conversation,
        model=model,
        summariser=summariser,
        tools=dict(tools or {}),
        builtins=builtins,
        hosted=hosted,
        policy=policy,
        budget=budget,
        context_window=context_window,
        max_output_tokens=reserved,
        max_steps=max_steps,
        tool_timeout=tool_timeout,
        settings=settings or ModelSettings(),
        compact=compact,
        deferred=deferred,
        guard=guard,
    )


class TurnCaller(Protocol[Out_co]):
    """What a caller of `TurnRun` makes of its turn; each method emits its wire events through `emit`."""

    async def begin(self, emit: Emit[Out_co]) -> None:
        """Before the turn's first event (a record made readable, the stream's opening events)."""

    async def event(self, event: TurnEvent, emit: Emit[Out_co]) -> None:
        """One of the turn's events."""

    async def end(self, outcome: TurnCompleted | TurnFailed | None, emit: Emit[Out_co]) -> None:
        """The turn ended (records kept, metrics, the closing events)."""

    def abandon(self, turn_id: str, error: Exception, emit: Emit[Out_co]) -> None:
        """The store failed under the turn: tell the client why from what is in memory, never a cut stream."""

    async def interrupted(self, turn_id: str, emit: Emit[Out_co]) -> None:
        """The turn was cancelled and is marked interrupted (under the shield: errors here are logged)."""


class TurnRun(Generic[Out]):
    """One turn on its own task, relayed through a queue; see the module docstring."""

    def __init__(
        self,
        setup: TurnSetup,
        content: Sequence[Part | Event],
        caller: TurnCaller[Out],
        *,
        interrupted: str,
        lease: AbstractAsyncContextManager[object] | None = None,
        after_turn: Callable[[TurnSetup], None] | None = None,
        on_close: Callable[[], None] | None = None,
        name: str = "turn",
        stage: bool = False,
    ) -> None:
        self.setup = setup
        self.content = content
        self.caller = caller
        self.reason = interrupted
        self.lease = lease
        """Held already (entered by the caller, so a busy conversation is refused before anything is sent);
        exited here once the turn's writes are done."""
        self.after_turn = after_turn
        self.on_close = on_close
        self.name = name
        self.turn_id = new_id("turn")
        self.task: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[Out | None] = asyncio.Queue()
        self._ending: asyncio.Future[None] | None = None
        self.stage = stage
        self._written: list[AnyEvent] = []
        self._whole = True
        """Every event of the turn is in `_written` or staged (no flush of it failed)."""

    def start(self) -> asyncio.Task[None]:
        """The turn's task (created at once, before any await; idempotent)."""
        if self.task is None:
            self.task = asyncio.create_task(self._drive(), name=f"{self.name} {self.turn_id}")
        return self.task

    def events(self) -> AsyncGenerator[Out, None]:
        """What the caller made of the turn's events (the relay itself, so closing it cancels the turn at once)."""
        return relay(self.start(), self._queue)

    def _emit(self, event: Out) -> None:
        self._queue.put_nowait(event)

    def turn_events(self) -> list[AnyEvent] | None:
        """A staged turn's events so far, flushed and staged, from memory (None: not staged, or a flush failed, so
        ask the store)."""
        conversation = self.setup.conversation
        if not self.stage or not self._whole or not conversation.staging:
            return None
        return [*self._written, *conversation.staged]

    async def flush(self, *, response: ResponseRecord | None = None) -> None:
        """Store what is staged so far (with `response`, one transaction) and stage on: the lifecycle does it
        before a step that waits (a tool outside the process, a summariser) or reads the store (recall, expand, a
        compaction's plan); a caller, to make what is running readable."""
        conversation = self.setup.conversation
        if not conversation.staging or (not conversation.staged and response is None):
            return
        try:
            self._written += await conversation.flush(response=response)
        except BaseException:
            self._whole = False
            raise
        conversation.stage()

    async def _drive(self) -> None:
        cancelled = False
        try:
            if self.stage:
                self.setup.conversation.stage()
            await self.caller.begin(self._emit)
            outcome: TurnCompleted | TurnFailed | None = None
            async for event in run_turn(self.setup, self.turn_id, self.content):
                if isinstance(event, (TurnCompleted, TurnFailed)):
                    outcome = event
                await self.caller.event(event, self._emit)
                if self.stage and isinstance(event, StepStarted):  # the step has not run yet: the run is paused
                    await self.flush()
            await self.caller.end(outcome, self._emit)
        except asyncio.CancelledError:
            cancelled = True
            raise
        except Exception as error:  # the store failed under the turn (a model's failure is a TurnFailed, not this)
            self.caller.abandon(self.turn_id, error, self._emit)
        finally:
            if not cancelled and self.lease is None and not self.stage:
                self._close()  # nothing to await: the task ends with the turn's last event, idle at once
            else:
                # One shielded wind-up, whole and in order, however often this task is cancelled while it runs (a
                # server's task group cancels again as it unwinds): a kept reference keeps it alive meanwhile.
                self._ending = asyncio.ensure_future(self._wind_up(cancelled=cancelled))
                await asyncio.shield(self._ending)

    async def _wind_up(self, *, cancelled: bool) -> None:
        try:
            if cancelled:
                try:
                    await mark_turn(self.setup.conversation, self.turn_id, "interrupted", self.reason)
                except Exception as error:  # the store failed: the turn is marked when the conversation is next held
                    log.warning("could not mark turn %s interrupted: %s", self.turn_id, error)
                try:
                    await self.caller.interrupted(self.turn_id, self._emit)
                except Exception as error:
                    log.warning("could not record interrupted turn %s: %s", self.turn_id, error)
            await self._settle(cancelled=cancelled)
        finally:
            try:
                if self.lease is not None:
                    await self.lease.__aexit__(None, None, None)
            finally:
                self._close()

    async def _settle(self, *, cancelled: bool) -> None:
        """What the caller left staged: a cancelled turn's (its marker with it) is stored; a failed one's is dropped
        (the store failed under it: nothing half-written)."""
        conversation = self.setup.conversation
        if not conversation.staging:
            return
        try:
            if cancelled:
                await conversation.flush()
            else:
                await conversation.discard()
        except Exception as error:  # the turn is marked when the conversation is next held
            log.warning("could not store what turn %s staged: %s", self.turn_id, error)

    def _close(self) -> None:
        self._queue.put_nowait(None)
        if self.on_close is not None:
            self.on_close()
        if self.after_turn is not None:  # committed and released: the conversation is free for it
            try:
                self.after_turn(self.setup)
            except Exception:
                log.exception("the after_turn hook failed for turn %s", self.turn_id)


async def relay(task: asyncio.Task[None], queue: asyncio.Queue[Out | None]) -> AsyncGenerator[Out, None]:
    """The events a turn's task puts on `queue`, up to its closing None (a local and a remote session stream their
    turns alike). Closed early, it cancels the task; either way it returns only once the task has ended, so the
    session is idle again when the stream is done."""
    try:
        while (event := await queue.get()) is not None:
            yield event
    finally:
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def cancel_turn(task: asyncio.Task[None] | None) -> bool:
    """Cancel a turn's task and wait for it to end; whether it was running."""
    if task is None or task.done():
        return False
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(task, return_exceptions=True)
    return True
