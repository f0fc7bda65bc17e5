"""The agent runtime: sessions, turns, steps, tools, and the typed events a streaming turn yields."""

from ._agent import Agent, AgentOptions
from ._events import (
    Delta,
    InferenceResult,
    StepCompleted,
    StepProgress,
    StepResult,
    StepStarted,
    StepType,
    TextDelta,
    ToolCallCompletedDelta,
    ToolCallDelta,
    ToolCallIssuedDelta,
    ToolCallStartedDelta,
    ToolExecutionResult,
    ToolOutcome,
    TurnCompleted,
    TurnError,
    TurnEvent,
    TurnFailed,
    TurnStarted,
)
from ._file_search import FileSearchOptions, file_search_tool
from ._mcp import McpServer, McpTool, mcp_tools
from ._mcp import list_tools as list_mcp_tools
from ._session import Session, SessionStatus, TurnResult
from ._tools import Tool, ToolLike, ToolOutput, tool

__all__ = [
    "Agent",
    "AgentOptions",
    "Delta",
    "FileSearchOptions",
    "InferenceResult",
    "McpServer",
    "McpTool",
    "Session",
    "SessionStatus",
    "StepCompleted",
    "StepProgress",
    "StepResult",
    "StepStarted",
    "StepType",
    "TextDelta",
    "Tool",
    "ToolCallCompletedDelta",
    "ToolCallDelta",
    "ToolCallIssuedDelta",
    "ToolCallStartedDelta",
    "ToolExecutionResult",
    "ToolLike",
    "ToolOutcome",
    "ToolOutput",
    "TurnCompleted",
    "TurnError",
    "TurnEvent",
    "TurnFailed",
    "TurnResult",
    "TurnStarted",
    "file_search_tool",
    "list_mcp_tools",
    "mcp_tools",
    "tool",
]
