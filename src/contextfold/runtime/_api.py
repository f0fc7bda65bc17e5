"""The one agent API, whichever side runs the turns: `Agent`/`Session` in this process, `RemoteAgent`/
`RemoteSession` against a `contextfold serve` (the conversation, compaction and recall on the server). Code written
against these protocols runs on either; both yield the same `TurnEvent`s and return the same `TurnResult`."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Protocol, runtime_checkable

from ..compaction import CompactionResult
from ..events import Part
from ._events import TurnEvent
from ._session import SessionStatus, TurnResult
from ._tools import ToolLike


@runtime_checkable
class SessionAPI(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def running(self) -> bool: ...

    def stream(self, content: str | Sequence[Part]) -> AsyncGenerator[TurnEvent, None]: ...

    async def turn(self, content: str | Sequence[Part]) -> TurnResult: ...

    async def interrupt(self) -> bool: ...

    async def set_system_prompt(self, prompt: str | None) -> None: ...

    async def set_max_output_tokens(self, tokens: int | None) -> None: ...

    async def set_tools(self, tools: Sequence[ToolLike] | None) -> None: ...

    async def compact(self, instructions: str | None = None) -> CompactionResult: ...

    async def status(self) -> SessionStatus: ...


@runtime_checkable
class AgentAPI(Protocol):
    async def create_session(
        self, *, session_id: str | None = None, metadata: dict[str, str] | None = None
    ) -> SessionAPI: ...

    async def session(self, session_id: str) -> SessionAPI: ...
