"""The built-in, server-side tools: `recall` and `expand`, the agent's way back to what compaction folded away.

They are offered only once the conversation has been compacted (before that nothing is hidden), and their steps
carry `server_side: true`. Their specs are terse (under 190 tokens for both, from 260): they are offered inside
the same budget as the view, and small budgets feel every token. A recall hit that a later statement supersedes
says so. `expand` takes a compaction id (the events it folded) or any event id (that event in
full): masked tool outputs tell the model "recall or expand event ev_…", so both must work.
"""

from __future__ import annotations

from .._conversation import Conversation
from .._errors import NotFoundError
from ..events import Compaction, Message, Reasoning, ToolCall, ToolResult, text_of
from ._tools import Tool

RECALL = "recall"
EXPAND = "expand"


def builtin_tools(conversation: Conversation, *, expand_tokens: int) -> list[Tool]:
    async def recall(query: str, limit: int = 5) -> str:
        """Search history folded out of your context: snippets and event ids, current ones first.

        Args:
            query: Words to find (a name, an id, an error).
            limit: At most 20.
        """
        hits = await conversation.recall(query, limit=max(1, min(limit, 20)))
        if not hits:
            return f"nothing folded away matches {query!r}"
        lines = [
            f"[{hit.event_id}, {hit.type}{', superseded by a later statement' if hit.superseded else ''}] {hit.snippet}"
            for hit in hits
        ]
        return "\n".join([*lines, "expand an event id to read that event in full"])

    async def expand(id: str) -> str:
        """Read folded history in full: an event, or all a compaction folded.

        Args:
            id: An event or compaction id.
        """
        found = await conversation.store.read(conversation.id, ids=[id])
        if not found:
            raise NotFoundError(f"no event or compaction with id {id!r} in this conversation")
        event = found[0]
        if isinstance(event, Compaction):
            expansion = await conversation.expand(id, max_tokens=expand_tokens)
            shown = [_describe(e) for e in expansion.events]
            if expansion.truncated:
                shown.append(f"[{expansion.total - len(expansion.events)} more events not shown: over the budget]")
            return "\n".join(shown) or "the compaction folded nothing that still exists"
        text = _describe(event)
        limit = expand_tokens * 4
        return text if len(text) <= limit else text[:limit] + f"\n[truncated: {len(text) - limit} more characters]"

    return [Tool(recall, server_side=True), Tool(expand, server_side=True)]


def _describe(event: object) -> str:
    if isinstance(event, Message):
        return f"[{event.id}, {event.role}] {text_of(event)}"
    if isinstance(event, ToolCall):
        return f"[{event.id}, call {event.call_id}] {event.name}({event.arguments})"
    if isinstance(event, ToolResult):
        return f"[{event.id}, result of {event.call_id}] {event.output}"
    if isinstance(event, Reasoning):
        return f"[{event.id}, reasoning] {event.text or ''}"
    return f"[{getattr(event, 'id', '?')}] {text_of(event) if isinstance(event, Compaction) else ''}"
