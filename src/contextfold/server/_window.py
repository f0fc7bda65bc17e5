"""The context report of `GET /v1/conversations/{id}/context`: the window now, by category, against its budget."""

from __future__ import annotations

from typing import Any

from .._conversation import Conversation
from ..events import Compaction, Message, Reasoning, ToolCall, ToolResult
from ..view._fold import masked_tokens
from ..view._tokens import ITEM_OVERHEAD, text_tokens, tools_tokens
from ._config import ServerConfig
from ._registry import ResolvedModel


async def context_report(conversation: Conversation, resolved: ResolvedModel, config: ServerConfig) -> dict[str, Any]:
    view = conversation.view
    window = resolved.context_window
    reserved = resolved.reserved_output(view.max_output_tokens)
    budget = window - reserved
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
        "model": resolved.name,
        "context_window": window,
        "reserved_output_tokens": reserved,
        "budget": budget,
        "tokens": {**tokens, "total": view.tokens, "estimated": view.estimated_tokens},
        "utilisation": round(100 * view.tokens / budget, 2) if budget > 0 else None,
        "compaction": resolved.compaction.describe(budget, summariser_name(resolved)),
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
