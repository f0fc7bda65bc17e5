"""The agent runtime: sessions, turns, steps, tools, and the typed events a streaming turn yields; the same API
against a remote server (`RemoteAgent`), and a terminal printer of turn events (`EventPrinter`)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._agent import Agent, AgentOptions
from ._api import AgentAPI, SessionAPI
from ._builtin import EXPAND, RECALL, builtin_tools
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
from ._file_search import FILE_SEARCH, FileSearchOptions, file_search_tool
from ._lifecycle import Emit, TurnCaller, TurnRun, cancel_turn, relay, turn_budget, turn_setup
from ._mcp import McpServer, McpTool, mcp_tools
from ._mcp import list_tools as list_mcp_tools
from ._printer import EventPrinter
from ._session import Session, SessionStatus, TurnResult
from ._tools import Tool, ToolLike, ToolOutput, tool
from ._turn import TurnSetup, mark_turn, run_turn

if TYPE_CHECKING:
    from ._remote import RemoteAgent, RemoteSession

_ADAPTERS = {"RemoteAgent": ("_remote", None), "RemoteSession": ("_remote", None)}
"""Loaded on first use: the remote client brings the openai SDK, which an in-process agent does not need."""


def __getattr__(name: str) -> Any:
    if name not in _ADAPTERS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_ADAPTERS[name][0]}"), name)


__all__ = [
    "EXPAND",
    "FILE_SEARCH",
    "RECALL",
    "Agent",
    "AgentAPI",
    "AgentOptions",
    "Delta",
    "Emit",
    "EventPrinter",
    "FileSearchOptions",
    "InferenceResult",
    "McpServer",
    "McpTool",
    "RemoteAgent",
    "RemoteSession",
    "Session",
    "SessionAPI",
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
    "TurnCaller",
    "TurnCompleted",
    "TurnError",
    "TurnEvent",
    "TurnFailed",
    "TurnResult",
    "TurnRun",
    "TurnSetup",
    "TurnStarted",
    "builtin_tools",
    "cancel_turn",
    "file_search_tool",
    "list_mcp_tools",
    "mark_turn",
    "mcp_tools",
    "relay",
    "run_turn",
    "tool",
    "turn_budget",
    "turn_setup",
]
