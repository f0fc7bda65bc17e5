"""A session: one conversation in the store, its turns, and the controls an operator needs while it runs.

One turn runs at a time per session (a second gets `BusyError`); the controls that change the log (system prompt,
output limit, tools, compact, clear) raise `BusyError` too while a turn or another control runs, so they never
interleave with the turn's own appends. Each turn runs in its own task: `interrupt()` cancels it, and the
turn is marked interrupted in the log before the stream ends with `TurnFailed(kind="interrupted")`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .._conversation import Conversation
from .._errors import BusyError, InvalidRequestError
from ..compaction import CompactionResult
from ..events import ConfigChange, Part, TextPart, TokenUsage
from ..models import ModelSettings
from ._compactor import Compactor
from ._events import StepCompleted, TurnCompleted, TurnError, TurnEvent, TurnFailed
from ._lifecycle import Emit, TurnRun, cancel_turn, turn_budget, turn_setup
from ._tools import Tool, ToolLike
from ._turn import TurnSetup

if TYPE_CHECKING:
    from ._agent import Agent

_INTERRUPTED = "interrupted by the caller"


@dataclass(frozen=True, slots=True)
class TurnResult:
    turn_id: str
    session_id: str
    final_text: str
    num_steps: int
    usage: TokenUsage
    incomplete_reason: str | None = None
    steps: list[StepCompleted] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SessionStatus:
    session_id: str
    model: str
    created_at: float
    conversation_length: int
    """Events in the log."""
    context_used: int
    """Estimated tokens of the view (what the next request sends before the new input)."""
    context_limit: int
    """The token budget of the view: the context window less the output reserved for the answer."""
    utilisation: float
    """context_used / context_limit, in percent."""
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    requests: int
    compactions: int
    running: bool


class Session:
    def __init__(self, agent: Agent, conversation: Conversation, context_window: int) -> None:
        self.agent = agent
        self.conversation = conversation
        self.context_window = context_window
        self.tools: dict[str, Tool] = dict(agent.tools)
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._held = asyncio.Lock()  # held by a turn, a control or a background compaction's commit
        self.compactor = Compactor(self._hold, enabled=agent.options.background_compaction)
        """Compacts after a turn that leaves the view past the soft threshold (see `runtime._compactor`)."""

    @property
    def id(self) -> str:
        return self.conversation.id

    # --- turns ----------------------------------------------------------------------------------------------------

    async def stream(self, content: str | Sequence[Part]) -> AsyncGenerator[TurnEvent, None]:
        """Run a turn, yielding its events as they happen.

        The turn runs in its own task. Closing the stream early (`async with contextlib.aclosing(...)`, or
        `aclose()`) interrupts it; a stream merely abandoned lets the turn run to its end.
        """
        parts = _parts(content)
        self._ensure_idle("start a turn")
        run = TurnRun(
            self._setup(), parts, _Relayed(self._held), interrupted=_INTERRUPTED, after_turn=self.compactor.after_turn
        )
        self._task = run.start()  # set before the first await: checking and claiming the session is one step
        async with contextlib.aclosing(run.events()) as events:
            async for event in events:
                yield event

    async def turn(self, content: str | Sequence[Part]) -> TurnResult:
        """Run a turn to its end and return the result; a failed turn raises the error it failed with."""
        return await result_of(self.id, self.stream(content))

    def _setup(self) -> TurnSetup:
        agent, view = self.agent, self.conversation.view
        options = agent.options
        reserved = view.max_output_tokens or options.max_output_tokens
        if reserved is None:
            reserved = min(agent.model.profile.max_output_tokens or 4_096, self.context_window // 4)
        return turn_setup(
            self.conversation,
            agent.model,
            budget=turn_budget(self.context_window, reserved, param="max_output_tokens"),
            reserved=reserved,
            policy=options.policy,
            summariser=None if options.compactor == "deterministic" else options.summariser or agent.model,
            tools=self.tools,
            expand_tokens=options.expand_tokens,
            max_steps=options.max_steps,
            tool_timeout=options.tool_timeout,
            context_window=self.context_window,
            settings=ModelSettings(temperature=options.temperature),
        )

    @contextlib.asynccontextmanager
    async def _hold(self, _: str) -> AsyncIterator[None]:
        """The session's conversation for a background compaction's commit: refused while a turn or a control
        runs (it moves the head anyway), and a turn that starts meanwhile waits for the commit to end."""
        if self._held.locked() or self.running:
            raise BusyError(f"session {self.id!r} is running a turn")
        async with self._held:
            yield

    async def close(self) -> None:
        """Stop background compaction: one still planning is dropped, a commit under way ends first."""
        await self.compactor.close()

    async def interrupt(self) -> bool:
        """Cancel the running turn, which is marked interrupted. Returns whether a turn was running."""
        return await cancel_turn(self._task)

    # --- controls -------------------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return (self._task is not None and not self._task.done()) or self._lock.locked()

    def _ensure_idle(self, action: str) -> None:
        if self.running:
            raise BusyError(f"session {self.id!r} is running a turn; wait for it or interrupt() it to {action}")

    async def set_system_prompt(self, prompt: str | None) -> None:
        """Replace (or with None, clear) the system prompt from the next request on."""
        await self._configure(ConfigChange(system_prompt=prompt), "change the system prompt")

    async def set_max_output_tokens(self, tokens: int | None) -> None:
        """Reserve `tokens` for each answer (None: back to the agent's default)."""
        if tokens is not None and not 0 < tokens < self.context_window:
            raise InvalidRequestError(
                f"max output tokens must be between 1 and the context window ({self.context_window}), got {tokens}"
            )
        await self._configure(ConfigChange(max_output_tokens=tokens), "change max output tokens")

    async def set_tools(self, tools: Sequence[ToolLike] | None) -> None:
        """Replace the tools offered to the model (None or []: no tools)."""
        from ._agent import tool_registry

        registry = tool_registry(tools or ())
        await self._configure(ConfigChange(tools=[t.spec for t in registry.values()] or None), "change the tools")
        self.tools = registry

    async def _configure(self, change: ConfigChange, action: str) -> None:
        self._ensure_idle(action)
        async with self._lock, self._held:
            await self.conversation.append(change)

    async def compact(self, instructions: str | None = None) -> CompactionResult:
        """Compact now, optionally steering the summary with `instructions`."""
        self._ensure_idle("compact")
        async with self._lock, self._held:
            setup = self._setup()
            return await self.conversation.compact(
                budget=setup.budget,
                policy=setup.policy,
                summariser=setup.summariser,
                trigger="manual",
                instructions=instructions,
            )

    async def clear(self) -> CompactionResult:
        """Start a fresh view (instructions, configuration and pins stay); the log keeps everything, recallable."""
        self._ensure_idle("clear")
        async with self._lock, self._held:
            return await self.conversation.clear()

    async def status(self) -> SessionStatus:
        view = self.conversation.view
        setup = self._setup()
        totals = view.totals
        return SessionStatus(
            session_id=self.id,
            model=self.agent.model.name,
            created_at=self.conversation.info.created_at,
            conversation_length=view.head,
            context_used=view.tokens,
            context_limit=setup.budget,
            utilisation=round(100 * view.tokens / setup.budget, 2),
            input_tokens=totals.input_tokens,
            output_tokens=totals.output_tokens,
            cached_input_tokens=totals.cached_input_tokens,
            requests=totals.requests,
            compactions=totals.compactions,
            running=self.running,
        )


async def result_of(session_id: str, events: AsyncIterator[TurnEvent]) -> TurnResult:
    """A turn's stream run to its end, as its result (a local and a remote session read their turns alike)."""
    steps: list[StepCompleted] = []
    async for event in events:
        if isinstance(event, StepCompleted):
            steps.append(event)
        elif isinstance(event, TurnCompleted):
            return TurnResult(
                event.turn_id,
                session_id,
                event.final_text,
                event.num_steps,
                event.usage,
                event.incomplete_reason,
                steps,
            )
        elif isinstance(event, TurnFailed):
            if isinstance(event.exception, Exception):
                raise event.exception
            raise asyncio.CancelledError(event.error.message)
    raise AssertionError("a turn's stream always ends with TurnCompleted or TurnFailed")


class _Relayed:
    """The library's caller of the lifecycle: the turn's own events, as they are."""

    def __init__(self, held: asyncio.Lock) -> None:
        self.held = held
        """The session's hold, taken as the turn begins (a background compaction's commit under way, one append,
        ends first) and given back as the turn ends, without an await: the session is idle once its stream is."""
        self.taken = False

    async def begin(self, emit: Emit[TurnEvent]) -> None:
        await self.held.acquire()
        self.taken = True

    def _release(self) -> None:
        if self.taken:
            self.taken = False
            self.held.release()

    async def event(self, event: TurnEvent, emit: Emit[TurnEvent]) -> None:
        emit(event)

    async def end(self, outcome: TurnCompleted | TurnFailed | None, emit: Emit[TurnEvent]) -> None:
        self._release()

    def abandon(self, turn_id: str, error: Exception, emit: Emit[TurnEvent]) -> None:
        self._release()
        emit(TurnFailed(turn_id, TurnError(type(error).__name__, str(error)), exception=error))

    async def interrupted(self, turn_id: str, emit: Emit[TurnEvent]) -> None:
        self._release()  # after the turn is marked interrupted
        emit(TurnFailed(turn_id, TurnError("interrupted", _INTERRUPTED)))


def _parts(content: str | Sequence[Part]) -> list[Part]:
    if isinstance(content, str):
        if not content.strip():
            raise InvalidRequestError("a turn needs input: the text is empty")
        return [TextPart(content)]
    parts = list(content)
    if not parts:
        raise InvalidRequestError("a turn needs input: no content parts were given")
    return parts
