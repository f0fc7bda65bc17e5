"""What the API's routes and the CLI's store commands both do to a conversation, as plain functions of the server's
state: the routes add only the HTTP shape (parameters, the JSON envelope), and `contextfold conversations` calls
these directly, with no server running and no route handler in between."""

from __future__ import annotations

import dataclasses
from typing import Any

from .._errors import InvalidRequestError
from ..compaction import CompactionResult
from ._state import ServerState
from .inspect._window import context_report, conversation_lines
from .responses._service import owned_conversation


async def context(state: ServerState, tenant: str, conversation_id: str, model: str | None) -> dict[str, Any]:
    """The window as the next request would send it, measured for `model` (None: the conversation's own)."""
    await owned_conversation(state, tenant, conversation_id)
    conversation = await state.views.peek(conversation_id)
    lines = await conversation_lines(state.registry, conversation, model)
    served = lines.model if lines.model in state.registry.names() else None
    return await context_report(conversation, lines, state.config, await state.registry.resolve(served))


async def compact(
    state: ServerState, tenant: str, conversation_id: str, instructions: str | None, model: str | None
) -> CompactionResult:
    """Compact now (holding the conversation), optionally steering the summary with `instructions`."""
    await owned_conversation(state, tenant, conversation_id)
    resolved = await state.registry.resolve(model)
    async with state.locks.hold(conversation_id):
        conversation = await state.views.current(conversation_id, resolved.name)
        result = await conversation.compact(
            budget=resolved.budget(conversation.view.max_output_tokens),
            policy=resolved.policy,
            summariser=resolved.summariser,
            trigger="manual",
            instructions=instructions,
        )
    if result.compacted:
        state.metrics.observe_compaction(result.strategy or "", result.tokens_before, result.tokens_after)
    return result


async def search(state: ServerState, tenant: str, conversation_id: str, query: str, limit: int) -> list[dict[str, Any]]:
    """Full-text hits over what is folded out of the view, best first."""
    await owned_conversation(state, tenant, conversation_id)
    conversation = await state.views.peek(conversation_id)
    try:
        hits = await conversation.recall(query, limit=limit)
    except InvalidRequestError as exc:  # the store's word for a query with nothing to look for: the client's `q`
        raise InvalidRequestError(str(exc), param="q") from None
    return [{"item_id": h.event_id, "seq": h.seq, "type": h.type, "snippet": h.snippet, "score": h.score} for h in hits]


def compaction_fields(result: CompactionResult) -> dict[str, Any]:
    """A compaction's result as the API and the CLI's `--json` show it."""
    return dataclasses.asdict(result)
