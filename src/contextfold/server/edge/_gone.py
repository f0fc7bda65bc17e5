"""Ending a non-streamed turn whose client went away.

A streamed answer notices a client that left at once (Starlette listens for the disconnect while it streams, and
the turn is cancelled). A non-streamed one has nothing to send until the end, so nobody would listen: `unless_gone`
listens meanwhile, and cancels the work when the client disconnects. The turn is then marked interrupted and its
conversation given back, as for a stream, instead of holding the conversation for an answer nobody will read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import Response

T = TypeVar("T")

CLIENT_GONE = 499
"""The status logged (and counted) for a request whose client left before its answer (nginx's convention)."""


async def unless_gone(request: Request, work: Coroutine[Any, Any, T]) -> T | None:
    """`work`'s result, or None when the client disconnected first (the work is then cancelled, and awaited)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)
    return None if task.cancelled() else task.result()


async def _disconnected(request: Request) -> None:
    """Returns once the client has gone. Called after the body was read: the next message can only be this."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def gone() -> Response:
    """What a request whose client left answers: nobody reads it, but the log and metrics say what happened."""
    return Response(status_code=CLIENT_GONE)


__all__ = ["CLIENT_GONE", "gone", "unless_gone"]
