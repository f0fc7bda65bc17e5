"""The background responses running on this replica (see `_background`): each drives its run to the end on a task
of its own, its stream events kept for resuming here and in the store; a watch reads the cancels other replicas
stored for them."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from typing import TYPE_CHECKING, Any

from ...store import ServerStore
from ..edge._replay import StreamBuffers

if TYPE_CHECKING:
    from .._state import ServerState
    from ._service import ResponseRun

log = logging.getLogger("contextfold.server")
POLL = 0.2
"""Seconds between reads of the database: a follower's for new events, the running replica's for cancels."""
FLUSH = 0.05
"""Seconds a batch of stream events gathers before it is written."""
STOPPED = "the server stopped while the response ran in the background; create it again"


class _StoredSink:
    """A run's events into this replica's resume buffer at once, and into the store in batches, in order."""

    def __init__(self, store: ServerStore, streams: StreamBuffers, response_id: str) -> None:
        self.store = store
        self.response_id = response_id
        self.memory = streams.open(response_id)
        self.pending: list[tuple[int, str]] = []
        self.writer: asyncio.Task[None] | None = None
        self.closed = False

    def add(self, event: dict[str, Any]) -> None:
        self.memory.add(event)
        self.pending.append((event["sequence_number"], json.dumps(event, separators=(",", ":"))))
        if self.writer is None or self.writer.done():
            self.writer = asyncio.ensure_future(self._write())

    def close(self) -> None:
        self.memory.close()
        self.closed = True

    async def _write(self) -> None:
        while self.pending:
            await asyncio.sleep(FLUSH)
            batch, self.pending = self.pending, []
            try:
                await self.store.runs.add(self.response_id, batch)
            except Exception as error:  # the stream stays resumable here; other replicas rebuild it when done
                log.warning("could not store stream events of %s: %s", self.response_id, error)

    async def flushed(self) -> None:
        while self.writer is not None and not self.writer.done():
            await asyncio.shield(self.writer)


class BackgroundRuns:
    """The background responses running on this replica, and the watch for cancels asked elsewhere."""

    def __init__(self) -> None:
        self.runs: dict[str, tuple[ResponseRun, asyncio.Task[None]]] = {}
        self._watch: asyncio.Task[None] | None = None

    async def start(self, state: ServerState, run: ResponseRun) -> None:
        record = run.record
        run.record = record = dataclasses.replace(record, data={**record.data, "background": True})
        await state.store.responses.put(record)  # findable on every replica before the client hears of it
        sink = _StoredSink(state.store, state.streams, record.id)
        run.sink = sink
        task = asyncio.create_task(self._drive(run, sink), name=f"background {record.id}")
        self.runs[record.id] = (run, task)
        if self._watch is None or self._watch.done():
            self._watch = asyncio.create_task(self._watch_cancels(state.store), name="background cancels")

    async def _drive(self, run: ResponseRun, sink: _StoredSink) -> None:
        try:
            async for _ in run.events():
                pass
        finally:
            self.runs.pop(run.record.id, None)
            await sink.flushed()

    async def _watch_cancels(self, store: ServerStore) -> None:
        while self.runs:
            await asyncio.sleep(POLL)
            try:
                asked = await store.runs.cancelled(list(self.runs))
            except Exception as error:  # the database is away: cancels wait for it
                log.warning("could not read background cancels: %s", error)
                continue
            for response_id in asked:
                self.cancel(response_id)

    def cancel(self, response_id: str) -> bool:
        """Cancel a run of this replica; False when it runs elsewhere (or no longer runs)."""
        found = self.runs.get(response_id)
        if found is None:
            return False
        found[1].cancel()
        return True

    async def stop(self) -> None:
        """The server stops: every run here fails, its turn marked interrupted."""
        for run, task in list(self.runs.values()):
            run.cancelled_as = ("failed", {"error": {"code": "server_error", "message": STOPPED}})
            task.cancel()
        await asyncio.gather(*(task for _, task in self.runs.values()), return_exceptions=True)
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
