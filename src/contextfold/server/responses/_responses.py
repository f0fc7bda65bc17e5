"""`/v1/responses`: create (streamed or not), retrieve (or resume its stream), delete, input items, compact,
count input tokens."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ..._conversation import Conversation
from ..._errors import InvalidRequestError
from ...events import Event, new_id
from ...view import TokenEstimator
from ...view._tokens import text_tokens, tools_tokens
from .._state import ServerState, state_of, tenant_of
from ..edge._gone import gone, unless_gone
from ..edge._replay import rebuilt
from . import _documented as documented
from ._background import follow_stored, respond
from ._items import CompactionInput, conversation_item, output_items, parse_input
from ._mcp_hosted import written_approvals
from ._objects import response_object
from ._responses_history import STATELESS, ItemHistory, history_of, hold_stateless, remember
from ._schemas import CompactRequest, InputTokensRequest, ResponseCreate, function_tools
from ._service import ResponseRun, append_entries, owned_conversation, owned_response
from ._stream import encode

router = APIRouter(prefix="/v1/responses", tags=["responses"])
Tenant = Annotated[str, Depends(tenant_of)]
State = Annotated[ServerState, Depends(state_of)]
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


@router.post("")
async def create_response(body: documented.ResponseCreate, tenant: Tenant, state: State, request: Request) -> Response:
    # No docstring: it would be the route's description in /openapi.json. The app's edge (`edge._asgi`) serves
    # this route without FastAPI for a body msgspec decodes; FastAPI sees only the others, validates them with the
    # documented model and answers the 400 naming the field (or serves what only pydantic's lax rules take).
    return await respond_to(body.decoded(), tenant, state, request)


async def respond_to(body: ResponseCreate, tenant: str, state: ServerState, request: Request) -> Response:
    """`POST /v1/responses` with its body decoded and its caller known."""
    if body.background:
        return await respond(state, tenant, body)
    run = await ResponseRun.start(state, tenant, body)
    if not body.stream:
        final = await unless_gone(request, _final(run))
        if final is None:  # the client left: the turn was cancelled (marked interrupted, the response cancelled)
            return gone()
        if run.failure is not None:
            # Not a 200 with status "failed": the caller gets the status of what went wrong (429 with its
            # Retry-After, 502/504 from the upstream, 400 context_length_exceeded), as OpenAI answers a failure.
            # The failed response stays retrievable when stored.
            raise run.failure
        return JSONResponse(final)
    run.sink = state.streams.open(run.record.id)  # the run keeps its events there, even after the client left
    events = run.events()
    # Started here, not when the body is first read: a client gone before the first byte must not keep the
    # conversation held. The turn runs on its own task from this first event on.
    first = await anext(events)

    async def frames() -> AsyncIterator[bytes]:
        yield encode(first)
        async for event in events:
            yield encode(event)

    return StreamingResponse(frames(), media_type="text/event-stream", headers=_SSE_HEADERS)


async def _final(run: ResponseRun) -> dict[str, Any]:
    final: dict[str, Any] | None = None
    async for event in run.events():
        if event["type"] in ("response.completed", "response.incomplete", "response.failed"):
            final = event["response"]
    assert final is not None
    return final


@router.get("/{response_id}")
async def retrieve_response(
    response_id: str,
    tenant: Tenant,
    state: State,
    stream: bool = False,
    starting_after: Annotated[int, Query(ge=-1)] = -1,
) -> Response:
    record = await owned_response(state, tenant, response_id)
    running_elsewhere = record.status == "in_progress" and not state.streams.has(response_id)
    # not running here: running on another replica, or left in progress by a crash (then it is failed now)
    if running_elsewhere and await state.views.settle(record.conversation_id):
        record = await owned_response(state, tenant, response_id)
    if stream:
        if state.streams.has(response_id):
            follow = state.streams.follow(response_id, starting_after)
            return StreamingResponse(follow, media_type="text/event-stream", headers=_SSE_HEADERS)
        if record.data.get("background"):  # its events are in the store, numbered as they were sent
            follow = follow_stored(state, record, starting_after)
            return StreamingResponse(follow, media_type="text/event-stream", headers=_SSE_HEADERS)
        if record.status == "in_progress" and state.streams.dropped(response_id):
            raise InvalidRequestError(
                f"response {response_id!r} streamed more than this server keeps for resuming (max_replay_bytes); "
                "retrieve it when it is done",
                param="stream",
            )
        if record.status == "in_progress":
            raise InvalidRequestError(
                f"response {response_id!r} is streaming on another replica; resume it there or retrieve it when done",
                param="stream",
            )
    events = await state.store.read(record.conversation_id, after=record.first_seq - 1) if record.first_seq else []
    response = response_object(record, events)
    if stream:
        frames = (encode(e) for e in rebuilt(response, starting_after))
        return StreamingResponse(frames, media_type="text/event-stream", headers=_SSE_HEADERS)
    return JSONResponse(response)


@router.delete("/{response_id}")
async def delete_response(response_id: str, tenant: Tenant, state: State) -> dict[str, Any]:
    await owned_response(state, tenant, response_id)
    await state.store.responses.delete(response_id)
    return {"id": response_id, "object": "response.deleted", "deleted": True}


@router.get("/{response_id}/input_items")
async def input_items(
    response_id: str,
    tenant: Tenant,
    state: State,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
) -> dict[str, Any]:
    record = await owned_response(state, tenant, response_id)
    output_seq = int(record.data.get("output_seq") or 0)
    # Without output_seq the response has not started answering: everything stored since its first seq is input.
    inputs = output_seq - record.first_seq if output_seq else None
    events = await state.store.read(record.conversation_id, after=record.first_seq - 1, limit=inputs)
    items = output_items(events)
    return page(items, after=after, limit=limit, order=order)


def page(items: list[dict[str, Any]], *, after: str | None, limit: int, order: str) -> dict[str, Any]:
    """A list page as OpenAI returns them: `data`, `first_id`, `last_id`, `has_more`."""
    ordered = items if order == "asc" else list(reversed(items))
    if after is not None:
        ids = [item["id"] for item in ordered]
        if after not in ids:
            raise InvalidRequestError(f"after: no item {after!r} in this list", param="after")
        ordered = ordered[ids.index(after) + 1 :]
    data = ordered[:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(ordered) > limit,
    }


@router.post("/compact")
async def compact_response(body: CompactRequest, tenant: Tenant, state: State) -> dict[str, Any]:
    """Compact a conversation (or the given input) now and return its view: its items, the summary of what was
    folded as one compaction item.

    A stateless input (no conversation, no previous response) is matched to the stored history it extends, as a
    stateless response is, and that conversation is compacted; an input that extends none is kept as a log of its
    own. Either way the anchors of the output are recorded, so the next request, which sends the output back as
    its history, continues the compacted conversation rather than starting over.
    """
    resolved = await state.registry.resolve(body.model)
    conversation_id = await _conversation_of(state, tenant, body)
    entries = parse_input(body.input, max_items=state.config.limits.max_items_per_request) if body.input else []
    created: str | None = None
    if conversation_id is None and body.input is None:
        raise InvalidRequestError("compact needs input, a conversation or a previous_response_id", param="input")
    if conversation_id is not None:
        await owned_conversation(state, tenant, conversation_id, param="conversation")
    try:
        async with contextlib.AsyncExitStack() as exit:
            conversation: Conversation | None = None
            if conversation_id is None:
                conversation, matched = await hold_stateless(state, exit, tenant, history_of(body.input), resolved.name)
                if conversation is not None and isinstance(body.input, list):
                    entries = parse_input(body.input[matched:]) if matched else entries
                elif conversation is None:
                    info = await state.store.conversations.create(tenant=tenant, metadata={STATELESS: "hidden"})
                    conversation_id = created = info.id
            if conversation is None:
                assert conversation_id is not None
                await exit.enter_async_context(state.locks.hold(conversation_id))
                conversation = await state.views.current(conversation_id, resolved.name)
            await append_entries(conversation, await written_approvals(state.store, conversation.id, entries))
            budget = resolved.budget(conversation.view.max_output_tokens)
            result = await conversation.compact(
                budget=budget,
                policy=resolved.policy,
                summariser=resolved.summariser,
                trigger="manual",
                instructions=body.instructions,
            )
            if result.compaction_id:
                state.metrics.observe_compaction(result.strategy or "", result.tokens_before, result.tokens_after)
            output = _compacted_output(conversation)
            await remember(state, conversation.id, ItemHistory(()), output)
    except BaseException:
        if created:
            state.views.forget(created)
            await state.store.conversations.delete(created)
        raise
    usage: dict[str, Any] = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
    usage["input_tokens_details"] = {"cached_tokens": 0, "cache_write_tokens": 0}
    usage["output_tokens_details"] = {"reasoning_tokens": 0}
    return {
        "id": new_id("resp"),
        "object": "response.compaction",
        "created_at": int(time.time()),
        "output": output,
        "usage": usage,
    }


async def _conversation_of(state: ServerState, tenant: str, body: CompactRequest | InputTokensRequest) -> str | None:
    """The conversation a compact or count request names, by `conversation` or by `previous_response_id`."""
    if body.conversation_id and body.previous_response_id:
        raise InvalidRequestError(
            "send either conversation or previous_response_id, not both: each names the history to use",
            param="previous_response_id",
        )
    if body.previous_response_id:
        record = await owned_response(state, tenant, body.previous_response_id, param="previous_response_id")
        return record.conversation_id
    return body.conversation_id


def _compacted_output(conversation: Conversation) -> list[dict[str, Any]]:
    """The view's items in order, its summary as the compaction item, in the summary's place.

    OpenAI answers with the user messages and one compaction item that stands for everything else. Ours stands only
    for what was folded, so the verbatim rest (the head and the tail, assistant messages and tool calls among them)
    is given too: the output, sent back as the next input (as OpenAI's clients do), is the whole view, losing nothing.
    """
    summary = conversation.view.active_summary()
    compaction = conversation_item(summary) if summary is not None else None
    items = output_items(conversation.view.window().items)
    if summary is None or compaction is None:
        return items
    return [compaction if item["id"] == summary.id else item for item in items]


@router.post("/input_tokens")
async def count_input_tokens(body: InputTokensRequest, tenant: Tenant, state: State) -> dict[str, Any]:
    """Tokens the view plus this input would take (the estimate contextfold budgets with)."""
    resolved = await state.registry.resolve(body.model)
    estimator = TokenEstimator()
    total = 0
    conversation_id = await _conversation_of(state, tenant, body)
    if conversation_id:
        await owned_conversation(state, tenant, conversation_id, param="conversation")
        total += (await state.views.peek(conversation_id)).view.tokens
    if body.input is not None:
        for entry in parse_input(body.input):
            if isinstance(entry, Event):
                total += estimator.estimate(entry, resolved.name)
            elif isinstance(entry, CompactionInput):
                total += text_tokens(entry.summary)
    if body.instructions:
        total += text_tokens(body.instructions)
    total += tools_tokens(function_tools(body.tools))
    return {"object": "response.input_tokens", "input_tokens": total}
