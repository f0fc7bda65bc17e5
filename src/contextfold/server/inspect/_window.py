"""The context report of `GET /v1/conversations/{id}/context`: the window now, by category, against its budget.

The window and budget are the conversation's: each model request records them on its `Usage` event, and the
newest such record wins over the server's model, so a server reopened with other flags (or none) measures a
conversation against the window it ran with. A log with no record (no request yet, or written before requests
recorded it) is measured against the model of its newest request when this server serves that name, else the
default model; a report that names a model is measured against that model. `/usage` draws the same lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..._conversation import Conversation
from ...events import Compaction, Message, Reasoning, ToolCall, ToolResult, Usage
from ...store import Store
from ...view._fold import masked_tokens
from ...view._tokens import ITEM_OVERHEAD, text_tokens, tools_tokens
from .._config import ServerConfig
from .._registry import ModelRegistry, ResolvedModel

_BACK = 256
"""Events read at a time when looking back through a log for its newest model request."""


@dataclass(frozen=True, slots=True)
class Lines:
    """The window a conversation is measured against, and the budget in it."""

    model: str
    context_window: int
    budget: int

    @property
    def reserved_output(self) -> int:
        return self.context_window - self.budget


def recorded_lines(usage: Usage | None) -> Lines | None:
    """The window and budget a request recorded, if it did (None for a log older than the record)."""
    if usage is None or usage.context_window is None or usage.budget is None:
        return None
    return Lines(usage.model, usage.context_window, usage.budget)


def served_lines(resolved: ResolvedModel, max_output_tokens: int | None) -> Lines:
    """The window and budget a turn on this server would use with `resolved`."""
    return Lines(resolved.name, resolved.context_window, resolved.budget(max_output_tokens))


async def newest_request(store: Store, conversation_id: str, head: int) -> Usage | None:
    """The newest `Usage` event at or before `head`, read from the end of the log back (usually one short read)."""
    cursor = head
    while cursor > 0:
        after = max(0, cursor - _BACK)
        events = await store.read(conversation_id, after=after, limit=cursor - after)
        for event in reversed(events):
            if isinstance(event, Usage):
                return event
        cursor = after
    return None


async def conversation_lines(registry: ModelRegistry, conversation: Conversation, model: str | None) -> Lines:
    """What to measure `conversation` against: the model named; else the newest request's record; else the
    newest request's model when served here; else the default model (see the module docstring)."""
    if model is None:
        newest = await newest_request(conversation.store, conversation.id, conversation.view.head)
        recorded = recorded_lines(newest)
        if recorded is not None:
            return recorded
        if newest is not None and newest.model in registry.names():
            model = newest.model
    resolved = await registry.resolve(model)
    return served_lines(resolved, conversation.view.max_output_tokens)


async def context_report(
    conversation: Conversation, lines: Lines, config: ServerConfig, resolved: ResolvedModel | None = None
) -> dict[str, Any]:
    """`resolved`: the served model whose compaction settings are in force (None: the server's own)."""
    view = conversation.view
    window, reserved, budget = lines.context_window, lines.reserved_output, lines.budget
    tokens = {
        "instructions": ITEM_OVERHEAD + text_tokens(view.system_prompt) if view.system_prompt else 0,
        "tools": tools_tokens(view.tools),
        "summary": 0,
        "messages": 0,
        "tool_calls": 0,
        "tool_outputs": 0,
        "masked_tool_outputs": 0,
        "reasoning": 0,
    }
    summary = view.active_summary()
    if summary is not None:
        tokens["summary"] = summary.tokens
    for seq, item in view.items.items():
        if isinstance(item, Message):
            key = "instructions" if item.role in ("system", "developer") else "messages"
            tokens[key] += item.tokens
        elif isinstance(item, ToolCall):
            tokens["tool_calls"] += item.tokens
        elif isinstance(item, ToolResult):
            if seq in view.masked:
                tokens["masked_tool_outputs"] += masked_tokens(item)
            else:
                tokens["tool_outputs"] += item.tokens
        elif isinstance(item, Reasoning):
            tokens["reasoning"] += item.tokens
    info = await conversation.store.conversations.get(conversation.id)
    latest = await conversation.store.read(conversation.id, seqs=[info.checkpoint]) if info.checkpoint else []
    return {
        "object": "conversation.context",
        "conversation_id": conversation.id,
        "model": lines.model,
        "context_window": window,
        "reserved_output_tokens": reserved,
        "budget": budget,
        "tokens": {**tokens, "total": view.tokens, "estimated": view.estimated_tokens},
        "utilisation": round(100 * view.tokens / budget, 2) if budget > 0 else None,
        "compaction": (
            resolved.compaction.describe(budget, summariser_name(resolved))
            if resolved is not None
            else config.compaction.describe(budget)
        ),
        "background_compaction": (resolved.compaction if resolved else config.compaction).describe_background(
            budget, enabled=config.compact_background
        ),
        "events": view.head,
        "items_in_view": len(view.items),
        "pinned": sorted(view.pinned),
        "masked": sorted(view.masked),
        "folded": [list(r) for r in view.covers],
        "summary": None if summary is None else {"id": summary.id, "seq": summary.seq, "text": summary.summary},
        "totals": {
            "requests": view.totals.requests,
            "input_tokens": view.totals.input_tokens,
            "output_tokens": view.totals.output_tokens,
            "cached_input_tokens": view.totals.cached_input_tokens,
            "compactions": view.totals.compactions,
        },
        "latest_compaction": _compaction(latest[0]) if latest else None,
    }


def _compaction(event: Any) -> dict[str, Any] | None:
    if not isinstance(event, Compaction):
        return None
    return {
        "id": event.id,
        "seq": event.seq,
        "strategy": event.strategy,
        "trigger": event.trigger,
        "tokens_before": event.tokens_before,
        "tokens_after": event.tokens_after,
        "created_at": event.created_at,
        "error": event.error,
    }


def summariser_name(resolved: ResolvedModel) -> str:
    """Who writes this model's summaries, by name (`none`: deterministic digests only)."""
    if resolved.summariser is None:
        return "none"
    return resolved.name if resolved.summariser is resolved.model else resolved.compaction.summariser
