"""Compaction off the request path: a turn that ends with the view past the policy's soft threshold schedules the
next compaction in the background, so the request that would have crossed the hard trigger finds it done.

Only the band between the two is compacted here. A view an answer left past the trigger is compacted by the next
request, inline, as the policy has always said: that request would compact anyway (a plan made here meanwhile
would race it, and the summariser would be called twice for one compaction), and it reports the compaction it
made (a compaction step, the Responses API's compaction item), so whether a response carries one never depends on
timing. A policy with `background=False` (a request that states its own threshold) is never compacted here.

The compaction is planned on a snapshot of the view (`Conversation.snapshot`) while requests go on, then committed
under the conversation's hold (the server's lease, the library session's turn lock), and only if the head has not
moved since the snapshot: the store's expected-head check backs that compare-and-swap, so a stale compaction is
never appended. A request that arrives while it plans is not held up: it runs on the view as it is (it fits, or
the request compacts inline itself, as before), and the background result loses the head check. The compactor
then plans once more from the newest turn's view, if one ended meanwhile, and otherwise drops it (the next turn
past the soft threshold schedules again).

One task per conversation at most. Errors are logged and counted, never raised into a request. On shutdown,
`drain` cancels what is still planning (nothing is written before the commit) and lets a commit under way finish
within the grace: the commit is one append, which the store makes whole or not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Literal

from .._conversation import Conversation
from .._errors import BusyError, ConflictError
from ..compaction import CompactionResult, compaction_due
from ..events import Compaction
from ..view._tokens import tools_tokens
from ._turn import TurnSetup

log = logging.getLogger("contextfold.compaction")

Hold = Callable[[str], AbstractAsyncContextManager[object]]
"""Holds a conversation (by id) while a compaction commits; raises `BusyError` when a turn holds it."""
Current = Callable[[Conversation], Awaitable[Conversation]]
"""The conversation at the store's head, called under the hold (the server's view cache; default: as it is)."""
Outcome = Literal["committed", "discarded", "recomputed", "nothing", "failed", "cancelled"]
Observer = Callable[[Outcome, CompactionResult | None], None]

DRAIN_GRACE = 5.0
"""Seconds `close` waits for a commit under way (planning is cancelled at once)."""


@dataclass(slots=True)
class CompactorStats:
    """What the compactor did, counted since it started."""

    scheduled: int = 0
    committed: int = 0
    discarded: int = 0
    """Lost the head check (a turn appended meanwhile) and not planned again."""
    recomputed: int = 0
    """Lost the head check once and planned again from the newer view."""
    nothing: int = 0
    """Planned, and nothing was due (the view had shrunk, or nothing could be folded)."""
    failed: int = 0
    cancelled: int = 0


async def _as_is(conversation: Conversation) -> Conversation:
    return conversation


class Compactor:
    """Background compactions for the conversations of one session or one server."""

    def __init__(
        self, hold: Hold, *, current: Current = _as_is, enabled: bool = True, observe: Observer | None = None
    ) -> None:
        self.hold = hold
        self.current = current
        self.enabled = enabled
        self.observe = observe
        self.stats = CompactorStats()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._later: dict[str, tuple[TurnSetup, Conversation]] = {}
        self._committing: set[str] = set()
        self._closed = False

    def running(self, conversation_id: str) -> bool:
        task = self._tasks.get(conversation_id)
        return task is not None and not task.done()

    def after_turn(self, setup: TurnSetup) -> None:
        """Call when a turn has ended (holding the conversation, or just after giving it back): schedules a
        compaction if the view is past the soft threshold. Never raises, never waits."""
        try:
            self._schedule(setup)
        except Exception:  # a bug here must not fail a turn that has already answered
            log.exception("could not schedule a background compaction of %s", setup.conversation.id)
            self.stats.failed += 1

    def _schedule(self, setup: TurnSetup) -> None:
        if not self.enabled or self._closed or not setup.compact or not setup.policy.background:
            return
        conversation, budget = setup.conversation, _budget(setup)
        # The band between the soft threshold and the trigger only: a view past the trigger is compacted by the
        # next request, inline (see the module docstring)
        if not compaction_due(conversation.view, budget=budget, policy=setup.policy, soft=True) or compaction_due(
            conversation.view, budget=budget, policy=setup.policy
        ):
            return
        snapshot = conversation.snapshot()  # now: the view as this turn left it (a later one loses the head check)
        if self.running(conversation.id):
            self._later[conversation.id] = (setup, snapshot)  # the running one plans again from here if it loses
            return
        self.stats.scheduled += 1
        task = asyncio.create_task(self._run(setup, snapshot), name=f"compaction {conversation.id}")
        self._tasks[conversation.id] = task
        task.add_done_callback(functools.partial(self._forget, conversation.id))

    def _forget(self, conversation_id: str, task: asyncio.Future[None]) -> None:
        if self._tasks.get(conversation_id) is task:
            del self._tasks[conversation_id]

    async def wait(self, conversation_id: str) -> None:
        """Wait until no background compaction of the conversation is running (for callers that must see it)."""
        task = self._tasks.get(conversation_id)
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def drain(self, grace: float = DRAIN_GRACE) -> None:
        """Stop scheduling; cancel what is still planning, give a commit under way up to `grace` seconds, then
        cancel that too (its append lands whole or not at all)."""
        self._closed = True
        tasks = dict(self._tasks)
        for conversation_id, task in tasks.items():
            if conversation_id not in self._committing:
                task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks.values(), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
        self._later.clear()

    async def close(self) -> None:
        await self.drain()

    async def _run(self, setup: TurnSetup, snapshot: Conversation) -> None:
        conversation_id = setup.conversation.id
        try:
            for attempt in range(2):
                moved = await self._attempt(setup, snapshot)
                if not moved:
                    return
                later = self._later.pop(conversation_id, None)
                if attempt or later is None:
                    self._count("discarded")
                    return
                self._count("recomputed")
                setup, snapshot = later
        except asyncio.CancelledError:
            self._count("cancelled")
            raise
        except Exception:
            log.exception("background compaction of %s failed", conversation_id)
            self._count("failed")
        finally:
            self._committing.discard(conversation_id)
            self._later.pop(conversation_id, None)

    async def _attempt(self, setup: TurnSetup, snapshot: Conversation) -> bool:
        """Plan on the snapshot and commit if its head is still the conversation's. Returns whether it moved."""
        policy = setup.policy
        # planned as if the soft threshold were the trigger: `compact` plans nothing for a view under the trigger
        policy = dataclasses.replace(policy, threshold=policy.soft, soft_threshold=None)
        items, turns, tokens = len(snapshot.view.items), snapshot.turns(), snapshot.view.tokens
        event = await snapshot.plan(budget=_budget(setup), policy=policy, summariser=setup.summariser)
        if event is None:
            self._count("nothing")
            return False
        conversation_id = setup.conversation.id
        try:
            async with self.hold(conversation_id):
                self._committing.add(conversation_id)
                live = await self.current(setup.conversation)
                if live.head != event.based_on_head:
                    return True
                (stored,) = await live.append(event)
        except (BusyError, ConflictError):  # a turn holds it, or another process appended: the head moves
            return True
        finally:
            self._committing.discard(conversation_id)
        assert isinstance(stored, Compaction)
        result = CompactionResult(
            compacted=True,
            trigger="auto",
            messages_before=items,
            messages_after=len(live.view.items),
            turns_before=turns,
            turns_after=live.turns(),
            tokens_before=tokens,
            tokens_after=live.view.tokens,
            strategy=stored.strategy,
            compaction_id=stored.id,
            summary_length=len(stored.summary or ""),
            error=stored.error,
        )
        log.info("compacted %s in the background: %d -> %d tokens", conversation_id, tokens, live.view.tokens)
        self._count("committed", result)
        return False

    def _count(self, outcome: Outcome, result: CompactionResult | None = None) -> None:
        setattr(self.stats, outcome, getattr(self.stats, outcome) + 1)
        if self.observe is not None:
            with contextlib.suppress(Exception):  # metrics must never fail a compaction
                self.observe(outcome, result)


def _budget(setup: TurnSetup) -> int:
    """The budget a compacted view must fit: it offers the built-in tools too (as the inline compaction plans)."""
    return setup.budget - tools_tokens([t.spec for t in [*setup.hosted, *setup.builtins]])
