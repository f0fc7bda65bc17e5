"""`/v1/conversations`: the OpenAI Conversations API, and contextfold's extensions beside it.

A conversation is its log: items added here are events in the same log the responses append to, so they reach the
model (there is no second copy). Listing items reads the log: every item ever added, folded or not, except
deleted ones and those of failed or interrupted turns.

Extensions (not in OpenAI's API, so its clients never call them): `GET /v1/conversations` (list),
`GET .../context` (the window now), `POST .../compact`, `POST .../pins` and `DELETE .../pins/{item_id}`,
`GET .../search?q=` (folded history), `POST .../fork`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query

from ..._conversation import Conversation
from ..._errors import InvalidEventError, InvalidRequestError, NotFoundError
from ...events import AnyEvent, Pin, ToolCall, ToolResult, TurnMarker
from ...store import ConversationInfo
from ...view import TokenEstimator, View
from .. import _operations as operations
from .._fork import fork
from .._state import ServerState, state_of, tenant_of
from ._items import BUILTIN_TOOLS, ItemReference, conversation_item, output_items, parse_input
from ._items_input import InputEntry
from ._mcp_hosted import written_approvals
from ._responses import page
from ._responses_history import STATELESS
from ._schemas import ConversationCompact, ConversationCreate, ConversationUpdate, ForkRequest, ItemsCreate, PinRequest
from ._service import append_entries, owned_conversation

router = APIRouter(prefix="/v1/conversations", tags=["conversations"])
extensions = APIRouter(prefix="/v1/conversations", tags=["contextfold extensions"])
Tenant = Annotated[str, Depends(tenant_of)]
State = Annotated[ServerState, Depends(state_of)]


def conversation_object(info: ConversationInfo) -> dict[str, Any]:
    return {"id": info.id, "object": "conversation", "created_at": int(info.created_at), "metadata": info.metadata}


@router.post("")
async def create_conversation(body: ConversationCreate, tenant: Tenant, state: State) -> dict[str, Any]:
    entries = await written_approvals(state.store, None, _entries(body.items, state)) if body.items else []
    info = await state.store.conversations.create(metadata=body.metadata or {}, tenant=tenant)
    if entries:
        try:
            await append_entries(
                Conversation(state.store, info, View(), estimator=TokenEstimator(), model=None), entries
            )
        except BaseException:
            await state.store.conversations.delete(info.id)  # nothing half-made is left behind
            raise
    return conversation_object(info)


@router.get("/{conversation_id}")
async def retrieve_conversation(conversation_id: str, tenant: Tenant, state: State) -> dict[str, Any]:
    return conversation_object(await owned_conversation(state, tenant, conversation_id))


@router.post("/{conversation_id}")
async def update_conversation(
    conversation_id: str, body: ConversationUpdate, tenant: Tenant, state: State
) -> dict[str, Any]:
    await owned_conversation(state, tenant, conversation_id)
    return conversation_object(await state.store.conversations.update(conversation_id, body.metadata))


@router.delete("/{conversation_id}")
async def delete_conversation(conversation_id: str, tenant: Tenant, state: State) -> dict[str, Any]:
    await owned_conversation(state, tenant, conversation_id)
    async with state.locks.hold(conversation_id):
        state.views.forget(conversation_id)
        await state.store.conversations.delete(conversation_id)
    return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}


@router.post("/{conversation_id}/items")
async def add_items(conversation_id: str, body: ItemsCreate, tenant: Tenant, state: State) -> dict[str, Any]:
    await owned_conversation(state, tenant, conversation_id)
    entries = _entries(body.items, state, param="items")
    async with state.locks.hold(conversation_id):
        conversation = await state.views.current(conversation_id, None)
        stored = await append_entries(conversation, await written_approvals(state.store, conversation_id, entries))
    items = output_items(stored)
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": False,
    }


@router.get("/{conversation_id}/items")
async def list_items(
    conversation_id: str,
    tenant: Tenant,
    state: State,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
) -> dict[str, Any]:
    await owned_conversation(state, tenant, conversation_id)
    events = await state.store.read(conversation_id)
    if _open(events) and await state.views.settle(conversation_id):  # a crash left a turn open: marked now
        events = await state.store.read(conversation_id)
    return page(output_items(_live(events)), after=after, limit=limit, order=order)


@router.get("/{conversation_id}/items/{item_id}")
async def retrieve_item(conversation_id: str, item_id: str, tenant: Tenant, state: State) -> dict[str, Any]:
    await owned_conversation(state, tenant, conversation_id)
    found = await state.store.read(conversation_id, ids=[item_id])
    result: ToolResult | None = None
    if found and isinstance(found[0], ToolCall) and found[0].name in BUILTIN_TOOLS:
        later = await state.store.read(conversation_id, after=found[0].seq)
        result = next((e for e in later if isinstance(e, ToolResult) and e.call_id == found[0].call_id), None)
    item = conversation_item(found[0], result=result) if found else None
    if item is None:
        raise NotFoundError(f"conversation {conversation_id!r} has no item {item_id!r}", param="item_id")
    return item


@router.delete("/{conversation_id}/items/{item_id}")
async def delete_item(conversation_id: str, item_id: str, tenant: Tenant, state: State) -> dict[str, Any]:
    info = await owned_conversation(state, tenant, conversation_id)
    async with state.locks.hold(conversation_id):
        conversation = await state.views.current(conversation_id, None)
        await conversation.delete(item_id)
    return conversation_object(info)


# --- extensions ---------------------------------------------------------------------------------------------------


@extensions.get("")
async def list_conversations(
    tenant: Tenant,
    state: State,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
) -> dict[str, Any]:
    """The caller's conversations, newest first by default, with their log sizes (not those that stateless
    requests with `store: false` fold into: the client asked for nothing to be kept)."""
    infos: list[ConversationInfo] = []
    cursor = after
    while len(infos) <= limit:
        found = await state.store.conversations.list(limit=limit + 1, after=cursor, tenant=tenant, order=order)
        infos += [i for i in found if i.metadata.get(STATELESS) != "hidden"]
        if len(found) <= limit:
            break
        cursor = found[-1].id
    data = [{**conversation_object(i), "events": i.head} for i in infos[:limit]]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(infos) > limit,
    }


@extensions.get("/{conversation_id}/context")
async def context(conversation_id: str, tenant: Tenant, state: State, model: str | None = None) -> dict[str, Any]:
    """The window as the next request would send it: tokens by category, budget, utilisation, compactions, and
    what is folded."""
    return await operations.context(state, tenant, conversation_id, model)


@extensions.post("/{conversation_id}/compact")
async def compact(conversation_id: str, body: ConversationCompact, tenant: Tenant, state: State) -> dict[str, Any]:
    """Compact now, optionally steering the summary with instructions. Returns what it did."""
    result = await operations.compact(state, tenant, conversation_id, body.instructions, body.model)
    return {"object": "conversation.compaction", **operations.compaction_fields(result)}


@extensions.post("/{conversation_id}/pins")
async def pin(conversation_id: str, body: PinRequest, tenant: Tenant, state: State) -> dict[str, Any]:
    """Pin an item so compaction always keeps it verbatim (a tool call or result pins its whole batch)."""
    return await _pin(state, tenant, conversation_id, body.item_id, pinned=True)


@extensions.delete("/{conversation_id}/pins/{item_id}")
async def unpin(conversation_id: str, item_id: str, tenant: Tenant, state: State) -> dict[str, Any]:
    return await _pin(state, tenant, conversation_id, item_id, pinned=False)


async def _pin(state: ServerState, tenant: str, conversation_id: str, item_id: str, *, pinned: bool) -> dict[str, Any]:
    await owned_conversation(state, tenant, conversation_id)
    async with state.locks.hold(conversation_id):
        conversation = await state.views.current(conversation_id, None)
        try:
            events = await conversation.pin(item_id, pinned=pinned)
        except InvalidEventError as exc:  # the item cannot be pinned (folded away, deleted): the client's item_id
            raise InvalidRequestError(str(exc), param="item_id") from None
    targets = [e.target for e in events if isinstance(e, Pin)]  # the pinned items' seqs, not the Pin events' own
    return {"object": "conversation.pin", "item_id": item_id, "pinned": pinned, "targets": targets}


@extensions.get("/{conversation_id}/search")
async def search(
    conversation_id: str,
    tenant: Tenant,
    state: State,
    q: Annotated[str, Query(min_length=1, max_length=1_000)],
    limit: Annotated[int, Query(ge=1, le=50)] = 10,
) -> dict[str, Any]:
    """Full-text search over what is folded out of the view (older items, masked tool outputs)."""
    return {"object": "list", "data": await operations.search(state, tenant, conversation_id, q, limit)}


@extensions.post("/{conversation_id}/fork")
async def fork_conversation(conversation_id: str, body: ForkRequest, tenant: Tenant, state: State) -> dict[str, Any]:
    """A new conversation with this one's log up to and including `item_id` (default: all of it)."""
    info = await owned_conversation(state, tenant, conversation_id)
    upto = info.head
    if body.item_id is not None:
        found = await state.store.read(conversation_id, ids=[body.item_id])
        if not found:
            raise NotFoundError(f"conversation {conversation_id!r} has no item {body.item_id!r}", param="item_id")
        upto = found[0].seq
    forked = await fork(state.store, conversation_id, upto, tenant=tenant, metadata=body.metadata)
    return conversation_object(await state.store.conversations.get(forked))


# --- helpers ------------------------------------------------------------------------------------------------------


def _entries(items: list[Any], state: ServerState, *, param: str = "items") -> list[InputEntry]:
    """The items to add: events, and compaction items (which mean here what they mean as input: see
    `append_entries`). An item reference names an item already stored, which adding again would duplicate."""
    entries = parse_input(items, param=param, max_items=state.config.limits.max_items_per_request)
    for n, entry in enumerate(entries):
        if isinstance(entry, ItemReference):
            raise InvalidRequestError(
                "item references cannot be added to a conversation: the item they name is already stored; send "
                "the item itself, or give the reference as response input",
                param=f"{param}[{n}]",
            )
    return [e for e in entries if not isinstance(e, ItemReference)]


def _live(events: list[AnyEvent]) -> list[AnyEvent]:
    """The log without the items of failed or interrupted turns (they never reached the view)."""
    failed = {e.turn_id for e in events if isinstance(e, TurnMarker) and e.status in ("failed", "interrupted")}
    return [e for e in events if e.turn_id is None or e.turn_id not in failed]


def _open(events: list[AnyEvent]) -> bool:
    """Whether a turn is open in the log: running, or left open by a crash."""
    markers = [e for e in events if isinstance(e, TurnMarker)]
    return bool(markers) and markers[-1].status == "started"
