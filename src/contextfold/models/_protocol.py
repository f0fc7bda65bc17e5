"""The model seam, as far as the engine needs it: send a window, get text, tool calls and usage back.

The providers issue grows this into streaming adapters; the engine (summaries, reactive compaction) only needs
`request`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ..view import Window


@dataclass(frozen=True, slots=True)
class ToolCallRequest:
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ModelResponse:
    text: str = ""
    tool_calls: list[ToolCallRequest] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    stop_reason: str = "stop"


@dataclass(frozen=True, slots=True)
class ModelSettings:
    max_output_tokens: int | None = None
    temperature: float | None = None
    timeout: float | None = None


class Model(Protocol):
    """Anything that answers a window. Errors are `ModelError` subclasses (e.g. `ContextLengthError`)."""

    name: str

    async def request(self, window: Window, settings: ModelSettings) -> ModelResponse: ...
