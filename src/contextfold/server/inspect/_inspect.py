"""The web inspector's JSON: a conversation's log with how each event stands in the view now, and its context use
per model request (for the chart). Both are derived from the log as it is; nothing new is stored.

- `GET /v1/conversations/{id}/events?after=SEQ&limit=N`: events in log order, each as the codec's JSON plus a
  `state`: `in_view`, `masked`, `folded` (covered by the summary or dropped by a compaction), `failed` (an item of
  a failed or interrupted turn), `erased` (deleted) or `marker` (not an item: turn markers, config, usage, pins,
  deletions, compactions). The page also says the log's `head`, `last_seq` (the `after=` of the next page),
  `has_more`, and the seqs `pinned` now. Polling with `after=` the last seq seen is cheap when nothing changed:
  one lookup, no log read (and `pinned` is then null).
- `GET /v1/conversations/{id}/usage`: every model request's reported input tokens beside our estimate, every
  compaction with its tokens before and after, and the window, budget, trigger and target lines to draw them on:
  the window the newest request recorded (the conversation's, whatever this server's flags), else the model's.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Query
from msgspec import UNSET

from ...events import AnyEvent, Compaction, ConfigChange, Message, Reasoning, ToolCall, ToolResult, TurnMarker, Usage
from ...view import View
from .._registry import ResolvedModel
from .._state import ServerState, state_of, tenant_of
from ..responses._service import owned_conversation
from ._window import Lines, recorded_lines, served_lines

inspect = APIRouter(prefix="/v1/conversations", tags=["contextfold extensions"])
Tenant = Annotated[str, Depends(tenant_of)]
State = Annotated[ServerState, Depends(state_of)]

_SCAN = 500
"""Events read at a time when looking past a page for how its turns ended."""
_FAILED = ("failed", "interrupted", "blocked")
_ITEMS = (Message, ToolCall, ToolResult, Reasoning)


@inspect.get("/{conversation_id}/events")
async def events(
    conversation_id: str,
    tenant: Tenant,
    state: State,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1_000)] = 200,
) -> dict[str, Any]:
    """The log's events after `after`, oldest first, each with how it stands in the view now."""
    return await log_page(state, tenant, conversation_id, after=after, limit=limit)


async def log_page(state: ServerState, tenant: str, conversation_id: str, *, after: int, limit: int) -> dict[str, Any]:
    """A page of the log with each event's state in the view (the route's body; the CLI's `show` calls it too)."""
    info = await owned_conversation(state, tenant, conversation_id)
    if after >= info.head:  # a poll with nothing new: no log read, no view
        return _page([], head=info.head, after=after, pinned=None)
    page = await state.store.read(conversation_id, after=after, limit=limit)
    # the view after the page was read: at least as new as every event in it
    view = (await state.views.peek(conversation_id)).view
    failed = await _failed_turns(state, conversation_id, page, view)
    data = [{**msgspec.to_builtins(e), "state": event_state(e, view, failed)} for e in page]
    return _page(data, head=view.head, after=after, pinned=sorted(view.pinned))


def event_state(event: AnyEvent, view: View, failed_turns: set[str]) -> str:
    """How an event stands in `view`: see the module docstring."""
    if not isinstance(event, _ITEMS):
        return "marker"
    if event.seq in view.items:
        return "masked" if event.seq in view.masked else "in_view"
    if event.redacted:
        return "erased"
    if event.turn_id is not None and event.turn_id in failed_turns:
        return "failed"
    return "folded"


async def _failed_turns(state: ServerState, conversation_id: str, page: list[AnyEvent], view: View) -> set[str]:
    """The turns of the page's out-of-view items that ended failed or interrupted. A turn's end marker follows its
    items, usually within the page; else the log is read on from the page's end until every such turn has ended
    (a turn still open is running, so none of its items is failed yet)."""
    ended: dict[str, bool] = {}
    wanted: set[str] = set()
    for event in page:
        if isinstance(event, TurnMarker) and event.turn_id and event.status != "started":
            ended[event.turn_id] = event.status in _FAILED
        elif isinstance(event, _ITEMS) and event.seq not in view.items and event.turn_id:
            wanted.add(event.turn_id)
    unknown = wanted - ended.keys() - view.open_turns.keys()
    cursor = page[-1].seq if page else 0
    while unknown and cursor < view.head:
        more = await state.store.read(conversation_id, after=cursor, limit=_SCAN)
        if not more:
            break
        for event in more:
            if isinstance(event, TurnMarker) and event.turn_id in unknown and event.status != "started":
                ended[event.turn_id] = event.status in _FAILED
                unknown.discard(event.turn_id)
        cursor = more[-1].seq
    return {turn for turn in wanted if ended.get(turn)}


def _page(data: list[dict[str, Any]], *, head: int, after: int, pinned: list[int] | None) -> dict[str, Any]:
    last = data[-1]["seq"] if data else after
    return {
        "object": "list",
        "data": data,
        "head": head,
        "last_seq": last,
        "has_more": last < head,
        "pinned": pinned,
    }


@inspect.get("/{conversation_id}/usage")
async def usage(conversation_id: str, tenant: Tenant, state: State, model: str | None = None) -> dict[str, Any]:
    """Context use per model request, compactions between them, and the lines to read them against."""
    await owned_conversation(state, tenant, conversation_id)
    log = await state.store.read(conversation_id)
    requests: list[dict[str, Any]] = []
    compactions: list[dict[str, Any]] = []
    max_output: int | None = None
    for event in log:
        if isinstance(event, Usage):
            requests.append(_request(event))
        elif isinstance(event, Compaction):
            compactions.append(_compaction(event, len(requests)))
        elif isinstance(event, ConfigChange) and event.max_output_tokens is not UNSET:
            max_output = event.max_output_tokens
    resolved = await state.registry.resolve(model if model is not None else _served(state, requests))
    # the window the conversation ran with, as its newest request recorded it, unless the caller names a model
    ran = recorded_lines(next((e for e in reversed(log) if isinstance(e, Usage)), None)) if model is None else None
    if ran is None:
        ran = served_lines(resolved, max_output)
    return {
        "object": "conversation.usage",
        "conversation_id": conversation_id,
        "model": ran.model,
        **_lines(ran, resolved.compaction.threshold, resolved.compaction.target),
        "requests": requests,
        "compactions": compactions,
    }


def budget_lines(resolved: ResolvedModel, max_output: int | None, threshold: float, target: float) -> dict[str, int]:
    """The window and the lines inside it, as the server's turns compute them (see `_service`, `_window`)."""
    return _lines(served_lines(resolved, max_output), threshold, target)


def _lines(lines: Lines, threshold: float, target: float) -> dict[str, int]:
    return {
        "context_window": lines.context_window,
        "reserved_output_tokens": lines.reserved_output,
        "budget": lines.budget,
        "trigger_tokens": int(threshold * lines.budget),
        "target_tokens": int(target * lines.budget),
    }


def _served(state: ServerState, requests: list[dict[str, Any]]) -> str | None:
    """The model the newest request went to, when this server serves it by that name; else the default model."""
    name = requests[-1]["model"] if requests else None
    return name if name in state.registry.names() else None


def _request(event: Usage) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "turn_id": event.turn_id,
        "model": event.model,
        "input_tokens": event.input_tokens,
        "estimated_input_tokens": event.estimated_input_tokens,
        "output_tokens": event.output_tokens,
        "cached_input_tokens": event.cached_input_tokens,
        "context_window": event.context_window,  # what the request was made against; None in older logs
        "budget": event.budget,
        "created_at": event.created_at,
    }


def _compaction(event: Compaction, requests_before: int) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "id": event.id,
        "strategy": event.strategy,
        "trigger": event.trigger,
        "tokens_before": event.tokens_before,
        "tokens_after": event.tokens_after,
        "created_at": event.created_at,
        "error": event.error,
        "after_request": requests_before,  # it sits between request `after_request - 1` and the next
        "turn_id": event.turn_id,
    }
