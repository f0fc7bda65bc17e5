"""Background responses: `background: true` answers at once, the turn runs on in this process, and any replica
can poll it (`GET /v1/responses/{id}`), cancel it (`POST /v1/responses/{id}/cancel`) or resume its stream
(`GET /v1/responses/{id}?stream=true&starting_after=N`).

Replicas share nothing but the database: the response record (stored before the answer, updated as the turn runs),
its stream events (written in batches to `response_events` as they happen), and a cancel request (a row in
`response_cancels`, polled by the replica running the turn, which then cancels it as a client going away would: the
turn is marked interrupted, the response `cancelled`, nothing of it shown). A background turn is not tied to its
request: the client may go. A stopping server fails its background responses (with their turns marked); one that
crashed leaves them `in_progress` until its lease lapses, and the next poll then fails them (`ViewCache.settle`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ..._errors import InvalidRequestError
from ...store import ResponseRecord
from .._state import ServerState, state_of, tenant_of
from ._background_runs import POLL
from ._objects import response_object
from ._schemas import ResponseCreate
from ._service import ResponseRun, owned_response
from ._stream import StreamMapper, encode

router = APIRouter(prefix="/v1/responses", tags=["responses"])
Tenant = Annotated[str, Depends(tenant_of)]
State = Annotated[ServerState, Depends(state_of)]

CANCEL_WAIT = 30.0
"""Seconds a cancel waits for the running replica to end the turn before it answers with the response as it is."""
_FINAL = ("response.completed", "response.incomplete", "response.failed")
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


async def respond(state: ServerState, tenant: str, body: ResponseCreate) -> Response:
    """Start the response in the background; answer with its stream (which the client may leave) or at once."""
    if not body.store:
        raise InvalidRequestError(
            "background responses must be stored (store: true): they are polled and resumed from the store",
            param="store",
        )
    run = await ResponseRun.start(state, tenant, body)
    await state.background.start(state, run)
    if body.stream:
        follow = state.streams.follow(run.record.id, -1)
        return StreamingResponse(follow, media_type="text/event-stream", headers=_SSE_HEADERS)
    return JSONResponse({**response_object(run.record, []), "status": "queued"})


async def follow_stored(state: ServerState, record: ResponseRecord, starting_after: int) -> AsyncIterator[bytes]:
    """A background response's stream as the store has it, after `starting_after`, live while it runs elsewhere.
    A run that ended without its final event stored (its replica crashed) ends with one built from its record."""
    cursor, quiet = starting_after, 0
    while True:
        rows = await state.store.runs.after(record.id, cursor)
        for seq, text in rows:
            event = json.loads(text)
            yield encode(event)
            cursor = seq
            if event["type"] in _FINAL:
                return
        if rows:
            quiet = 0
            continue
        record = await state.store.responses.get(record.id)
        if record.status != "in_progress":
            if await state.store.runs.after(record.id, cursor, limit=1):
                continue  # the last events landed just now
            mapper = StreamMapper()
            mapper.sequence = cursor + 1
            for event in mapper.finish(await _object(state, record)):
                yield encode(event)
            return
        quiet += 1
        if quiet % 25 == 0:  # ~5 s without news: the replica running it may have died (its lease lapsed)
            await state.views.settle(record.conversation_id)
        await asyncio.sleep(POLL)


async def _object(state: ServerState, record: ResponseRecord) -> dict[str, Any]:
    events = await state.store.read(record.conversation_id, after=record.first_seq - 1) if record.first_seq else []
    return response_object(record, events)


@router.post("/{response_id}/cancel")
async def cancel_response(response_id: str, tenant: Tenant, state: State) -> dict[str, Any]:
    record = await owned_response(state, tenant, response_id)
    if not record.data.get("background"):
        raise InvalidRequestError(
            f"response {response_id!r} was not created with background: true; only background responses can be "
            "cancelled (a streamed one is cancelled by closing its stream)",
            param="response_id",
        )
    if record.status == "in_progress" and not state.background.cancel(response_id):
        await state.store.runs.cancel(response_id)  # the replica running it polls for this
    waited = 0.0
    while record.status == "in_progress" and waited < CANCEL_WAIT:
        await asyncio.sleep(POLL)
        waited += POLL
        record = await owned_response(state, tenant, response_id)
        if record.status == "in_progress" and not state.streams.has(response_id):
            with contextlib.suppress(Exception):
                await state.views.settle(record.conversation_id)  # a crashed replica's: failed once its lease lapsed
    return await _object(state, record)
