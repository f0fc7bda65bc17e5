"""A model that plays back a script: the provider of the tests, the demo and the model-free summariser.

Each call consumes the next step:
- a string: the answer's text, streamed a few words at a time;
- a `ModelResponse`: its text and tool calls streamed (arguments in two chunks), then its usage and stop reason;
- a `Stream`: exactly these stream events, in order; an exception among them is raised at that point, which is
  how a test cuts a stream off mid-way;
- an exception: raised before anything is streamed (so a retryable one is retried under the retry policy);
- a function of the window returning any of the above.
Calls are recorded; calling past the script raises, and `assert_consumed` fails when steps were left over, so a
test cannot pass by accident with a script it never ran. Its default retry policy makes one attempt: each call is
one step. Give it a `RetryPolicy` to test retries.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from .._errors import ModelResponseError
from ..view import Window
from ._base import RetryPolicy, StreamingModel
from ._protocol import (
    ModelProfile,
    ModelResponse,
    ModelSettings,
    ResponseDone,
    StreamEvent,
    TextChunk,
    ToolCallChunk,
    ToolCallStart,
)


@dataclass(frozen=True, slots=True)
class Stream:
    """A scripted stream: events yielded as given; an exception is raised where it stands."""

    events: Sequence[StreamEvent | BaseException]


Answer: TypeAlias = str | ModelResponse | Stream | BaseException
Step: TypeAlias = Answer | Callable[[Window], Answer]


class ScriptedModel(StreamingModel):
    provider_name = "scripted"

    def __init__(
        self,
        steps: Iterable[Step] = (),
        *,
        name: str = "scripted",
        profile: ModelProfile | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(name, profile=profile or ModelProfile(), retry=retry or RetryPolicy(attempts=1))
        self._steps = list(steps)
        self.calls: list[tuple[Window, ModelSettings]] = []

    def add(self, *steps: Step) -> None:
        self._steps.extend(steps)

    @property
    def remaining(self) -> int:
        return len(self._steps)

    async def _stream_once(self, window: Window, settings: ModelSettings) -> AsyncIterator[StreamEvent]:
        self.calls.append((window, settings))
        if not self._steps:
            raise ModelResponseError(
                f"scripted model {self.name!r} has no step left for call {len(self.calls)}; add more steps"
            )
        step = self._steps.pop(0)
        answer = step(window) if callable(step) and not isinstance(step, (ModelResponse, Stream)) else step
        if isinstance(answer, BaseException):
            raise answer
        events = answer.events if isinstance(answer, Stream) else stream_of(answer)
        for event in events:
            if isinstance(event, BaseException):
                raise event
            yield event

    def assert_consumed(self) -> None:
        if self._steps:
            raise AssertionError(f"scripted model {self.name!r} has {len(self._steps)} unconsumed step(s)")


def stream_of(answer: str | ModelResponse) -> list[StreamEvent]:
    """The stream a provider would send for `answer`: text a few words at a time, each call's arguments in two."""
    if isinstance(answer, str):
        answer = ModelResponse(text=answer, output_tokens=max(1, len(answer) // 4))
    if answer.tool_calls and answer.stop_reason == "stop":
        answer = dataclasses.replace(answer, stop_reason="tool_calls")
    events: list[StreamEvent] = []
    words = answer.text.split(" ") if answer.text else []
    for start in range(0, len(words), 4):
        chunk = " ".join(words[start : start + 4])
        events.append(TextChunk(chunk if start == 0 else " " + chunk))
    for index, call in enumerate(answer.tool_calls):
        events.append(ToolCallStart(index, call.call_id, call.name))
        half = len(call.arguments) // 2
        events += [ToolCallChunk(index, part) for part in (call.arguments[:half], call.arguments[half:]) if part]
    events.append(ResponseDone(answer))
    return events
