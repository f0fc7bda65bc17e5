"""The provider seam, the shared adapter machinery, and the scripted model that ships for tests and demos."""

from ._base import (
    ResponseBuilder,
    RetryPolicy,
    StreamingModel,
    collect,
    error_for_status,
    is_context_length_message,
    retry_after_seconds,
)
from ._profiles import profile_for
from ._protocol import (
    Model,
    ModelProfile,
    ModelResponse,
    ModelSettings,
    ReasoningBlock,
    ReportsContextWindow,
    ResponseDone,
    StopReason,
    StreamEvent,
    TextChunk,
    ToolCallChunk,
    ToolCallRequest,
    ToolCallStart,
    reports_context_window,
)
from ._scripted import ScriptedModel, Step, Stream, stream_of

__all__ = [
    "Model",
    "ModelProfile",
    "ModelResponse",
    "ModelSettings",
    "ReasoningBlock",
    "ReportsContextWindow",
    "ResponseBuilder",
    "ResponseDone",
    "RetryPolicy",
    "ScriptedModel",
    "Step",
    "StopReason",
    "Stream",
    "StreamEvent",
    "StreamingModel",
    "TextChunk",
    "ToolCallChunk",
    "ToolCallRequest",
    "ToolCallStart",
    "collect",
    "error_for_status",
    "is_context_length_message",
    "profile_for",
    "reports_context_window",
    "retry_after_seconds",
    "stream_of",
]
