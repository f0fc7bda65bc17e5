"""What a streaming turn yields: small dataclasses with a `type` tag.

    TurnStarted
      StepStarted(compaction)        when the view is over the policy's threshold before an inference
      StepCompleted(CompactionResult)
      StepStarted(inference)
        StepProgress(TextDelta)          text as the model streams it
        StepProgress(ToolCallStartedDelta) a tool call begins (its id and the tool's name)
        StepProgress(ToolCallDelta)      a tool call's arguments as the model streams them
        StepProgress(ToolCallIssuedDelta) each complete call, when the model's answer is complete
      StepCompleted(InferenceResult)
      StepStarted(tool_execution, metadata.server_side, metadata.tool_type)   server-side tools (recall, expand,
                                     file_search, MCP) and client functions in separate steps; tool_type is the
                                     calls' kind ("function", "file_search", "mcp", ...), or "mixed"
        StepProgress(ToolCallCompletedDelta)  each result, in the order the tools finish
      StepCompleted(ToolExecutionResult)
      ... inference and tool execution alternate until the model answers without tool calls
    TurnCompleted | TurnFailed

Every step that starts also completes; a failed inference completes with its `error` before the turn fails.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..compaction import CompactionResult
from ..events import TokenUsage
from ..models import StopReason, ToolCallRequest

StepType = Literal["inference", "tool_execution", "compaction"]


# --- deltas -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str
    item_id: str = ""
    """The id the assistant message will have in the log."""
    type: Literal["text"] = "text"


@dataclass(frozen=True, slots=True)
class ToolCallStartedDelta:
    call_id: str
    tool_name: str
    item_id: str = ""
    """The id the call will have in the log."""
    type: Literal["tool_call_started"] = "tool_call_started"


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    call_id: str
    arguments_delta: str
    type: Literal["tool_call"] = "tool_call"


@dataclass(frozen=True, slots=True)
class ToolCallIssuedDelta:
    call_id: str
    tool_name: str
    arguments: str
    type: Literal["tool_call_issued"] = "tool_call_issued"


@dataclass(frozen=True, slots=True)
class ToolCallCompletedDelta:
    call_id: str
    tool_name: str
    result: str
    is_error: bool = False
    type: Literal["tool_call_completed"] = "tool_call_completed"


Delta = TextDelta | ToolCallStartedDelta | ToolCallDelta | ToolCallIssuedDelta | ToolCallCompletedDelta


# --- step results -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InferenceResult:
    text: str
    tool_calls: list[ToolCallRequest]
    stop_reason: StopReason
    usage: TokenUsage
    model: str
    error: str | None = None
    type: Literal["inference"] = "inference"


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    call_id: str
    tool_name: str
    output: str
    is_error: bool = False
    summary: str | None = None


@dataclass(frozen=True, slots=True)
class ToolExecutionResult:
    calls: list[ToolCallRequest]
    results: list[ToolOutcome]
    type: Literal["tool_execution"] = "tool_execution"


StepResult = InferenceResult | ToolExecutionResult | CompactionResult


# --- turn and step events -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TurnStarted:
    turn_id: str
    session_id: str
    type: Literal["turn_started"] = "turn_started"


@dataclass(frozen=True, slots=True)
class StepStarted:
    step_id: str
    step_type: StepType
    turn_id: str
    metadata: dict[str, Any] = field(default_factory=dict)
    type: Literal["step_started"] = "step_started"


@dataclass(frozen=True, slots=True)
class StepProgress:
    step_id: str
    delta: Delta
    type: Literal["step_progress"] = "step_progress"


@dataclass(frozen=True, slots=True)
class StepCompleted:
    step_id: str
    step_type: StepType
    result: StepResult
    type: Literal["step_completed"] = "step_completed"


@dataclass(frozen=True, slots=True)
class TurnCompleted:
    turn_id: str
    final_text: str
    num_steps: int
    usage: TokenUsage
    incomplete_reason: str | None = None
    """None when the model finished; else why the turn stopped early: `max_steps`, `max_output_tokens`,
    `content_filter`."""
    awaiting: list[ToolCallRequest] = field(default_factory=list)
    """Calls of deferred tools (see `TurnSetup.deferred`) whose results the caller sends as the next input."""
    type: Literal["turn_completed"] = "turn_completed"


@dataclass(frozen=True, slots=True)
class TurnError:
    kind: str
    """The error's class name (`RateLimitError`, `ContextOverflowError`, ...) or `interrupted`."""
    message: str


@dataclass(frozen=True, slots=True)
class TurnFailed:
    turn_id: str
    error: TurnError
    type: Literal["turn_failed"] = "turn_failed"
    exception: BaseException | None = field(default=None, repr=False, compare=False)
    """The exception itself, for callers that re-raise it (a non-streaming turn does)."""


TurnEvent = TurnStarted | StepStarted | StepProgress | StepCompleted | TurnCompleted | TurnFailed
