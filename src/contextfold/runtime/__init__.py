"""The agent runtime: sessions, turns, steps, tools, and the typed events a streaming turn yields; the same API
against a remote server (`RemoteAgent`), and a terminal printer of turn events (`EventPrinter`)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._agent import Agent, AgentOptions
from ._api import AgentAPI, SessionAPI
from ._builtin import EXPAND, RECALL, builtin_tools
from ._compactor import Compactor
from ._embeddings import Embedder
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
from ._file_search import FILE_SEARCH, FileSearchOptions, file_search_tool, search_chunks, search_options
from ._file_search import parse_output as parse_file_search_output
from ._file_search import result_of as file_search_result
from ._guard import Blocked, TurnGuard
from ._ingest import Ingestor, chunking_of
from ._lifecycle import Emit, TurnCaller, TurnRun, cancel_turn, relay, turn_budget, turn_setup
from ._mcp import McpListingError, McpServer, McpTool, mcp_tools
from ._mcp import call_tool as call_mcp_tool
from ._mcp import exposed_name as mcp_exposed_name
from ._mcp import list_tools as list_mcp_tools
from ._mcp import remote_of as mcp_remote_of
from ._mcp import split_name as mcp_split_name
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
    "Blocked",
    "Compactor",
    "Delta",
    "Embedder",
    "Emit",
    "EventPrinter",
    "FileSearchOptions",
    "InferenceResult",
    "Ingestor",
    "McpListingError",
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
    "TurnGuard",
    "TurnResult",
    "TurnRun",
    "TurnSetup",
    "TurnStarted",
    "builtin_tools",
    "call_mcp_tool",
    "cancel_turn",
    "chunking_of",
    "file_search_result",
    "file_search_tool",
    "list_mcp_tools",
    "mark_turn",
    "mcp_exposed_name",
    "mcp_remote_of",
    "mcp_split_name",
    "mcp_tools",
    "parse_file_search_output",
    "relay",
    "run_turn",
    "search_chunks",
    "search_options",
    "tool",
    "turn_budget",
    "turn_setup",
]
