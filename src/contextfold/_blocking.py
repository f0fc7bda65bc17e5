"""The synchronous façade: one event loop in a background thread that runs the async API for blocking code.

    with Blocking() as run:
        store = run(open_store("contextfold.db"))
        session = run(Agent(model, store=store).create_session())
        print(run(session.turn("hello")).final_text)
        for event in run.iterate(session.stream("and now?")):
            print(event)

There is no second, synchronous class tree: everything is the async API, awaited on the façade's loop. Objects made
on that loop (stores, sessions) must be used through the same `Blocking`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Awaitable, Iterator
from types import TracebackType
from typing import TypeVar

T = TypeVar("T")


class Blocking:
    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="contextfold-blocking", daemon=True)
        self._thread.start()

    def __call__(self, awaitable: Awaitable[T]) -> T:
        """Await `awaitable` on the façade's loop and return its result (or raise its error)."""
        if self._loop.is_closed():
            raise RuntimeError("this Blocking façade is closed")

        async def wrapped() -> T:
            return await awaitable

        return asyncio.run_coroutine_threadsafe(wrapped(), self._loop).result()

    def iterate(self, stream: AsyncGenerator[T, None]) -> Iterator[T]:
        """Iterate an async generator (a turn's stream) from blocking code; leaving the loop early closes it."""
        try:
            while True:
                try:
                    yield self(stream.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            self(stream.aclose())

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> Blocking:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
