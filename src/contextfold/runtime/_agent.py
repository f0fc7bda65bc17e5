"""An agent: a model, instructions, tools, a compaction policy and a store. It creates and resumes sessions.

    agent = Agent(model, store=store, instructions="You are a careful coding agent.", tools=[read_file])
    session = await agent.create_session()
    result = await session.turn("Why does the build fail?")
    async for event in session.stream("Fix it."):
        ...

The agent holds no per-session state: any number of sessions (and their turns) run concurrently on one agent and
one provider client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from .._conversation import Conversation
from .._errors import ConfigurationError, InvalidRequestError
from ..compaction import CompactionPolicy
from ..events import ConfigChange
from ..models import Model, reports_context_window
from ..store import Store
from ._session import Session
from ._tools import Tool, ToolLike, as_tool


@dataclass(frozen=True, slots=True)
class AgentOptions:
    """How an agent runs its turns.

    `context_window` overrides what the upstream reports and what the model's profile says. `max_output_tokens` is
    reserved for each answer (the view gets the rest of the window); by default the profile's output limit, at
    most a quarter of the window. `max_steps` bounds the inference steps of one turn; a turn that reaches it
    completes as incomplete. `summariser` writes the compaction summaries (default: the agent's model);
    `compactor="deterministic"` uses no model at all: masking, then the deterministic digest of the span.
    """

    context_window: int | None = None
    max_output_tokens: int | None = None
    max_steps: int = 20
    tool_timeout: float = 60.0
    temperature: float | None = None
    policy: CompactionPolicy = field(default_factory=CompactionPolicy)
    summariser: Model | None = None
    compactor: Literal["model", "deterministic"] = "model"
    expand_tokens: int = 4_000
    background_compaction: bool = False
    """Compact off the request path once a turn leaves the view between the policy's soft threshold and its
    trigger. Opt-in (the server has it on): a session has no lifespan, so a plan would outlive the caller's turn
    (its commit failing on a store closed before `session.close()`), and a program's back-to-back turns race it."""

    def __post_init__(self) -> None:
        for name in ("context_window", "max_output_tokens"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise InvalidRequestError(f"agent option {name} must be a positive number of tokens, got {value}")
        if self.max_steps < 1:
            raise InvalidRequestError(f"agent option max_steps must be at least 1, got {self.max_steps}")
        if self.compactor not in ("model", "deterministic"):
            raise InvalidRequestError(
                f"agent option compactor must be 'model' or 'deterministic', got {self.compactor!r}"
            )
        if self.compactor == "deterministic" and self.summariser is not None:
            raise InvalidRequestError("agent options compactor='deterministic' and a summariser exclude each other")
        if self.tool_timeout <= 0:
            raise InvalidRequestError(f"agent option tool_timeout must be positive, got {self.tool_timeout}")


class Agent:
    def __init__(
        self,
        model: Model,
        *,
        store: Store,
        instructions: str | None = None,
        tools: Sequence[ToolLike] = (),
        options: AgentOptions | None = None,
    ) -> None:
        self.model = model
        self.store = store
        self.instructions = instructions
        self.tools = tool_registry(tools)
        self.options = options or AgentOptions()
        self._window: int | None = None
        self._window_lock = asyncio.Lock()

    async def create_session(self, *, session_id: str | None = None, metadata: dict[str, str] | None = None) -> Session:
        """A new session: a conversation in the store, starting with the agent's instructions and tools."""
        window = await self.context_window()
        conversation = await Conversation.create(
            self.store, conversation_id=session_id, metadata=metadata, model=self.model.name
        )
        if self.instructions or self.tools:
            await conversation.append(
                ConfigChange(
                    system_prompt=self.instructions or None,
                    tools=[t.spec for t in self.tools.values()] or None,
                )
            )
        return Session(self, conversation, window)

    async def session(self, session_id: str) -> Session:
        """Resume a session from the store (a checkpointed load). Turns a crash left open are marked interrupted."""
        window = await self.context_window()
        conversation = await Conversation.load(self.store, session_id, model=self.model.name)
        await conversation.recover()
        return Session(self, conversation, window)

    async def context_window(self) -> int:
        """The model's context window: configured, else reported by the upstream, else from the model's profile."""
        if self.options.context_window is not None:
            return self.options.context_window
        async with self._window_lock:  # ask the upstream once, not once per concurrent session
            if self._window is None:
                reported = await self.model.upstream_context_window() if reports_context_window(self.model) else None
                self._window = reported or self.model.profile.context_window
            if self._window is None:
                raise ConfigurationError(
                    f"the context window of model {self.model.name!r} is unknown: its profile does not say and the "
                    "upstream does not report it; set AgentOptions(context_window=...)"
                )
            return self._window


def tool_registry(tools: Sequence[ToolLike]) -> dict[str, Tool]:
    registry: dict[str, Tool] = {}
    for item in tools:
        made = as_tool(item)
        if made.name in registry:
            raise InvalidRequestError(f"two tools are named {made.name!r}; tool names must be unique")
        if made.name in ("recall", "expand"):
            raise InvalidRequestError(f"tool name {made.name!r} is reserved for the built-in tool; rename yours")
        registry[made.name] = made
    return registry
