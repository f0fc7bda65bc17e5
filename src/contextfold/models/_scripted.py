"""A model that plays back a script: for tests, demos and the summariser until real providers are wired.

Each call consumes the next step: a string (the answer's text), a `ModelResponse`, an exception to raise, or a
function of the window. Calls are recorded; calling past the script raises, and `assert_consumed` fails when steps
were left over, so a test cannot pass by accident with a script it never ran.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeAlias

from .._errors import ModelResponseError
from ..view import Window
from ._protocol import ModelResponse, ModelSettings

Step: TypeAlias = str | ModelResponse | BaseException | Callable[[Window], "str | ModelResponse"]


class ScriptedModel:
    def __init__(self, steps: Iterable[Step] = (), *, name: str = "scripted") -> None:
        self.name = name
        self._steps = list(steps)
        self.calls: list[tuple[Window, ModelSettings]] = []

    def add(self, *steps: Step) -> None:
        self._steps.extend(steps)

    @property
    def remaining(self) -> int:
        return len(self._steps)

    async def request(self, window: Window, settings: ModelSettings) -> ModelResponse:
        self.calls.append((window, settings))
        if not self._steps:
            raise ModelResponseError(
                f"scripted model {self.name!r} has no step left for call {len(self.calls)}; add more steps"
            )
        step = self._steps.pop(0)
        if isinstance(step, BaseException):
            raise step
        if callable(step) and not isinstance(step, ModelResponse):
            step = step(window)
        if isinstance(step, str):
            return ModelResponse(text=step, output_tokens=max(1, len(step) // 4))
        return step

    def assert_consumed(self) -> None:
        if self._steps:
            raise AssertionError(f"scripted model {self.name!r} has {len(self._steps)} unconsumed step(s)")
