"""The server's Responses stream read back as the runtime's turn and step events (the inverse of
`server/responses/_stream.py`), so a remote turn yields exactly the events an in-process turn yields.

    response.compaction.compacting                 StepStarted(compaction)
      output_item.done (compaction)                StepCompleted(compaction), figures fetched by the caller
    output_item.added (message | function_call)    StepStarted(inference) when none is open
      output_text.delta                            StepProgress(TextDelta)
      output_item.added (function_call | mcp_call) StepProgress(ToolCallStartedDelta)
      function_call_arguments.delta                StepProgress(ToolCallDelta)
      output_item.done (function_call)             StepProgress(ToolCallIssuedDelta)
      mcp_call_arguments.done                      StepProgress(ToolCallIssuedDelta) (a server-side call)
    the first event after the inference's burst of `.done` events closes it: StepCompleted(inference)
    mcp_call.in_progress ... output_item.done (mcp_call)   StepStarted/StepProgress/StepCompleted(tool_execution,
                                                           server_side) once every server call has its result
    response.completed | incomplete | failed        closes what is open; the response is kept for the caller

The server reports usage per response, not per inference: the last inference step of a response carries it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..events import TokenUsage, new_id
from ..models import StopReason, ToolCallRequest
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
    TurnEvent,
)

_BURST = frozenset(
    {
        "response.output_text.done",
        "response.content_part.done",
        "response.function_call_arguments.done",
        "response.mcp_call_arguments.done",
        "response.mcp_call.in_progress",
    }
)
"""The events the server sends as an inference step closes (with `output_item.done` of its message and calls)."""
_ENDS = {"response.completed": "completed", "response.incomplete": "incomplete", "response.failed": "failed"}


@dataclass(frozen=True, slots=True)
class CompactionDone:
    """A compaction step ended: the caller completes it with the compaction's figures (`StepCompleted`)."""

    step_id: str
    compaction_id: str


@dataclass(slots=True)
class _Inference:
    step_id: str
    text: list[str] = field(default_factory=list)
    calls: list[ToolCallRequest] = field(default_factory=list)
    closing: bool = False


@dataclass(slots=True)
class _ServerTools:
    step_id: str
    calls: list[ToolCallRequest]
    results: dict[str, ToolOutcome] = field(default_factory=dict)


def _get(obj: Any, name: str, default: Any = None) -> Any:
    """A field of an SDK model or of a plain dict (the chat reads the SDK's objects, tests may feed dicts)."""
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


class ResponseTranslator:
    """Reads one streamed response. `feed` each event; `status`, `response` and `function_calls` once it ends."""

    def __init__(self, turn_id: str, model: str | None = None) -> None:
        self.turn_id = turn_id
        self.model = model
        self.steps = 0
        self.texts: list[str] = []
        """Every inference's text, in order (the turn's final text is the last)."""
        self.function_calls: list[ToolCallRequest] = []
        """The client's calls the response ended with: run them and send their outputs."""
        self.status: str | None = None
        self.response: Any = None
        self.usage = TokenUsage()
        self._inference: _Inference | None = None
        self._tools: _ServerTools | None = None
        self._compaction: str | None = None  # the open compaction step's id
        self._items: dict[str, tuple[str, str]] = {}  # item id -> (call id, tool name)
        self._server: dict[str, str] = {}  # mcp item id -> tool name, announced as the inference closes
        self._client_calls: list[ToolCallRequest] = []  # a deferred call always ends its response
        self._last: str | None = None  # the kind of the last step closed

    def feed(self, event: Any) -> list[TurnEvent | CompactionDone]:
        kind = str(_get(event, "type", ""))
        out: list[TurnEvent | CompactionDone] = []
        inference = self._inference
        ending = kind in _ENDS  # the end closes the last inference itself, with the response's usage
        if (
            inference is not None
            and inference.closing
            and not ending
            and kind not in _BURST
            and not self._closing_done(event)
        ):
            out += self._close_inference()
        if kind == "response.compaction.compacting":
            self.steps += 1
            self._compaction = new_id("step")
            meta = {"trigger": "auto", "compaction_id": str(_get(event, "item_id", ""))}
            out.append(StepStarted(self._compaction, "compaction", self.turn_id, meta))
        elif kind == "response.output_item.added":
            out += self._added(_get(event, "item"))
        elif kind == "response.output_text.delta":
            out += self._open_inference()
            self._step().text.append(str(_get(event, "delta", "")))
            delta = TextDelta(str(_get(event, "delta", "")), str(_get(event, "item_id", "")))
            out.append(StepProgress(self._step().step_id, delta))
        elif kind in ("response.function_call_arguments.delta", "response.mcp_call_arguments.delta"):
            call = self._items.get(str(_get(event, "item_id", "")))
            if call is not None and self._inference is not None:
                arguments = ToolCallDelta(call[0], str(_get(event, "delta", "")))
                out.append(StepProgress(self._inference.step_id, arguments))
        elif kind == "response.mcp_call_arguments.done":
            item_id = str(_get(event, "item_id", ""))
            name = self._items.get(item_id, (item_id, ""))[1]
            request = ToolCallRequest(item_id, name, str(_get(event, "arguments", "") or "{}"))
            self._server[item_id] = name
            if self._inference is not None:
                self._inference.calls.append(request)
                self._inference.closing = True
                issued = ToolCallIssuedDelta(item_id, name, request.arguments)
                out.append(StepProgress(self._inference.step_id, issued))
        elif kind in _BURST and self._inference is not None:
            self._inference.closing = True
        elif kind == "response.output_item.done":
            out += self._done(_get(event, "item"))
        elif kind in _ENDS:
            out += self._end(kind, _get(event, "response"))
        return out

    # --- items ----------------------------------------------------------------------------------------------------

    def _added(self, item: Any) -> list[TurnEvent | CompactionDone]:
        kind = _get(item, "type")
        if kind not in ("message", "function_call", "mcp_call", "reasoning"):
            return []
        out = self._open_inference()
        item_id = str(_get(item, "id", ""))
        if kind in ("function_call", "mcp_call"):
            call_id = str(_get(item, "call_id", None) or item_id)  # a built-in call is named by its item id
            name = str(_get(item, "name", ""))
            self._items[item_id] = (call_id, name)
            out.append(StepProgress(self._step().step_id, ToolCallStartedDelta(call_id, name, item_id)))
        return out

    def _done(self, item: Any) -> list[TurnEvent | CompactionDone]:
        kind = _get(item, "type")
        out: list[TurnEvent | CompactionDone] = []
        if kind == "compaction" and self._compaction is not None:
            out.append(CompactionDone(self._compaction, str(_get(item, "id", ""))))
            self._compaction = None
        elif kind == "function_call":
            out += self._open_inference()  # a stream joined late still reads the call
            assert self._inference is not None
            call = ToolCallRequest(str(_get(item, "call_id")), str(_get(item, "name")), str(_get(item, "arguments")))
            self._inference.calls.append(call)
            self._inference.closing = True
            self._client_calls.append(call)
            delta = ToolCallIssuedDelta(call.call_id, call.name, call.arguments)
            out.append(StepProgress(self._inference.step_id, delta))
        elif kind == "message" and self._inference is not None:
            self._inference.closing = True
        elif kind == "mcp_call":
            out += self._server_result(item)
        return out

    def _closing_done(self, event: Any) -> bool:
        """An `output_item.done` of the closing inference's own message or call (still part of its burst)."""
        if _get(event, "type") != "response.output_item.done":
            return False
        return _get(_get(event, "item"), "type") in ("message", "function_call")

    # --- steps ----------------------------------------------------------------------------------------------------

    def _step(self) -> _Inference:
        assert self._inference is not None
        return self._inference

    def _open_inference(self) -> list[TurnEvent | CompactionDone]:
        if self._inference is not None:
            return []
        out = self._close_tools()
        self.steps += 1
        self._inference = _Inference(new_id("step"))
        meta = {"model": self.model} if self.model else {}
        out.append(StepStarted(self._inference.step_id, "inference", self.turn_id, meta))
        return out

    def _close_inference(
        self, usage: TokenUsage | None = None, stop: StopReason | None = None, error: str | None = None
    ) -> list[TurnEvent | CompactionDone]:
        inference, self._inference = self._inference, None
        if inference is None:
            return []
        self._last = "inference"
        text = "".join(inference.text)
        self.texts.append(text)
        reason: StopReason = stop or ("tool_calls" if inference.calls else "stop")
        result = InferenceResult(text, inference.calls, reason, usage or TokenUsage(), self.model or "", error)
        out: list[TurnEvent | CompactionDone] = [StepCompleted(inference.step_id, "inference", result)]
        server = [c for c in inference.calls if c.call_id in self._server]
        if server:
            self.steps += 1
            self._tools = _ServerTools(new_id("step"), server)
            meta = {"server_side": True, "tools": [c.name for c in server]}
            out.append(StepStarted(self._tools.step_id, "tool_execution", self.turn_id, meta))
        return out

    def _server_result(self, item: Any) -> list[TurnEvent | CompactionDone]:
        tools = self._tools
        item_id = str(_get(item, "id", ""))
        if tools is None or item_id not in {c.call_id for c in tools.calls}:
            return []
        error = _get(item, "error")
        outcome = ToolOutcome(item_id, str(_get(item, "name", "")), str(_get(item, "output", "") or ""), bool(error))
        tools.results[item_id] = outcome
        delta = ToolCallCompletedDelta(outcome.call_id, outcome.tool_name, outcome.output, outcome.is_error)
        out: list[TurnEvent | CompactionDone] = [StepProgress(tools.step_id, delta)]
        if len(tools.results) == len(tools.calls):
            out += self._close_tools()
        return out

    def _close_tools(self) -> list[TurnEvent | CompactionDone]:
        tools, self._tools = self._tools, None
        if tools is None:
            return []
        self._last = "tool_execution"
        results = [tools.results[c.call_id] for c in tools.calls if c.call_id in tools.results]
        return [StepCompleted(tools.step_id, "tool_execution", ToolExecutionResult(tools.calls, results))]

    def _end(self, kind: str, response: Any) -> list[TurnEvent | CompactionDone]:
        self.status = _ENDS[kind]
        self.response = response
        usage = _get(response, "usage")
        if usage is not None:
            self.usage = TokenUsage(int(_get(usage, "input_tokens", 0) or 0), int(_get(usage, "output_tokens", 0) or 0))
        stop: StopReason | None = None
        if self.status == "incomplete":
            stop = "length" if self.incomplete_reason == "max_output_tokens" else "content_filter"
        elif self.status == "failed":
            stop = "error"
        failure = self.error
        if self._inference is None and self.status != "failed" and self._last != "inference":
            out = self._open_inference()  # an empty answer streams no item, but it was an inference all the same
        else:
            out = []
        out += self._close_inference(self.usage, stop, failure[1] if failure else None) + self._close_tools()
        self.function_calls = list(self._client_calls) if self.status == "completed" else []
        return out

    @property
    def incomplete_reason(self) -> str | None:
        details = _get(self.response, "incomplete_details")
        return str(_get(details, "reason")) if details is not None and _get(details, "reason") else None

    @property
    def error(self) -> tuple[str, str] | None:
        """The failed response's (code, message)."""
        error = _get(self.response, "error")
        if self.status != "failed":
            return None
        if error is None:
            return ("server_error", "the response failed")
        return (str(_get(error, "code", "server_error")), str(_get(error, "message", "the response failed")))
