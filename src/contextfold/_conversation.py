"""A conversation: its log in a store, its view in memory, and the operations that keep both right.

Every change goes through `append`, which checks the events against the view, caches their token estimates,
appends them with the view's head as the expected head (so a writer that fell behind gets `ConflictError`, never an
interleaved log) and folds them into the view. One `Conversation` object serves one turn at a time; concurrent
turns on one conversation are ordered by the store, not by sharing this object.

A turn run under the conversation's lease may `stage()` its appends: each is checked and folded into the view at
once, as above, but written only by `flush()`, in one transaction with the turn's records (`commit_turn`). A flush
that fails leaves nothing written, and the view is rebuilt from the store (or, if the store could not be reached,
marked `stale` for its holder to reload), so it never stays ahead of the log.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from ._checks import KEEP_ROLES, check_events
from ._errors import ConflictError, ContextOverflowError, InvalidEventError, NotFoundError, StoreError
from ._recall import RecallHit, mark_superseded, stated_hits
from .compaction import CompactionPolicy, CompactionResult, compact
from .compaction._plan import ranges, turn_groups
from .events import (
    AnyEvent,
    Compaction,
    Deletion,
    Event,
    Item,
    Message,
    Pin,
    Reasoning,
    ToolCall,
    ToolResult,
    Trigger,
    TurnMarker,
    Usage,
)
from .models import Model
from .store import ConversationInfo, ResponseRecord, Store, TurnAnchors
from .store._common import prepare
from .view import TokenEstimator, View, Window

_COMPACTION_ATTEMPTS = 3
_WITHDRAWN_MAX_EVENTS = 2_000


@dataclass(frozen=True, slots=True)
class Expansion:
    """The events a compaction folded, verbatim, as many as fit the token budget."""

    compaction_id: str
    events: list[Item]
    total: int
    truncated: bool


class Conversation:
    def __init__(
        self,
        store: Store,
        info: ConversationInfo,
        view: View,
        *,
        estimator: TokenEstimator,
        model: str | None,
    ) -> None:
        self.store = store
        self.info = info
        self.view = view
        self.estimator = estimator
        self.model = model
        self._staged: list[AnyEvent] | None = None
        self._base = 0
        self.stale = False
        """A failed flush could not rebuild the view: it may be ahead of the log, so load the conversation again."""

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def head(self) -> int:
        return self.view.head

    # --- opening --------------------------------------------------------------------------------------------------

    @classmethod
    async def create(
        cls,
        store: Store,
        *,
        conversation_id: str | None = None,
        metadata: dict[str, str] | None = None,
        estimator: TokenEstimator | None = None,
        model: str | None = None,
    ) -> Conversation:
        info = await store.conversations.create(conversation_id, metadata)
        return cls(store, info, View(), estimator=estimator or TokenEstimator(), model=model)

    @classmethod
    async def load(
        cls,
        store: Store,
        conversation_id: str,
        *,
        estimator: TokenEstimator | None = None,
        model: str | None = None,
    ) -> Conversation:
        """Load from the newest compaction: reads what the view holds and what followed, not the whole log."""
        info = await store.conversations.get(conversation_id)
        checkpoint = await store.checkpoint(conversation_id)
        if checkpoint.compaction is None:
            view = View.replay(checkpoint.after)
        else:
            view = View.from_checkpoint(
                checkpoint.compaction, checkpoint.kept, checkpoint.summary_holder, checkpoint.after
            )
        return cls(store, info, view, estimator=estimator or TokenEstimator(), model=model)

    async def recover(self, reason: str = "the process running the turn stopped") -> list[str]:
        """Mark turns left open by a crash as interrupted, taking their events out of the view.

        Call it when no turn of this conversation can be running (at start-up, or holding the conversation's turn
        lock). Returns the ids of the turns it marked.
        """
        opened = list(self.view.open_turns)
        if opened:
            await self.append(*(TurnMarker(status="interrupted", turn_id=t, reason=reason) for t in opened))
        return opened

    async def refresh(self) -> int:
        """Fold in events other writers appended since this view's head. Returns how many."""
        events = await self.store.read(self.id, after=self.view.head)
        for event in events:
            self.view.apply(event)
        return len(events)

    # --- writing --------------------------------------------------------------------------------------------------

    async def append(self, *events: Event) -> list[AnyEvent]:
        """Check, estimate, store and fold in `events`, all or none (while staging: stored by `flush`)."""
        if self.stale:
            raise StoreError(f"conversation {self.id!r} may be ahead of its log after a failed flush; load it again")
        self.check(events)
        estimated = [
            msgspec.structs.replace(e, tokens=self.estimator.estimate(e, self.model)) if e.tokens == 0 else e
            for e in events
        ]
        if self._staged is not None:
            # numbered and validated as the store will (the same `prepare`), so a bad event fails here, not later
            stored = [row.event for row in prepare(self.id, estimated, self.view.head)]
            self._staged += stored
        else:
            stored = await self.store.append(self.id, estimated, self.view.head)
        self._fold(stored)
        return stored

    def _fold(self, stored: Sequence[AnyEvent]) -> None:
        for event in stored:
            self.view.apply(event)
            if isinstance(event, Usage) and event.estimated_input_tokens:
                self.estimator.calibrate(event.model, event.estimated_input_tokens, event.input_tokens)

    # --- staging a turn -------------------------------------------------------------------------------------------

    @property
    def staging(self) -> bool:
        return self._staged is not None

    @property
    def staged(self) -> tuple[AnyEvent, ...]:
        """What is staged and not yet flushed (numbered as the store will number it)."""
        return tuple(self._staged or ())

    def stage(self) -> None:
        """Hold appends from now on: checked and folded into the view, written by `flush`. Only under the
        conversation's lease (nobody else may write until the flush), and reads of the store (`refresh`, `pin`,
        `delete`, `recall`, `expand`) do not see what is staged."""
        if self._staged is not None:
            raise InvalidEventError(f"conversation {self.id!r} is staging already; flush it first")
        self._staged, self._base = [], self.view.head

    async def flush(
        self,
        *,
        response: ResponseRecord | None = None,
        anchors: TurnAnchors | None = None,
        release: str | None = None,
    ) -> list[AnyEvent]:
        """Write what was staged, with the turn's records, in one transaction (`ServerStore.commit_turn`), and stop
        staging. On any failure nothing is written and the view goes back to the log before the error is raised:
        rebuilt from the store, or, when the store could not be reached (`StoreError`), marked `stale` without
        asking it again (in an outage that read would wait as long as the commit did, and keep the client from
        its error: the holder reloads it on the next hold). A store without `commit_turn` (a plain `Store`) takes
        the events alone."""
        staged, self._staged = self._staged or [], None
        commit = getattr(self.store, "commit_turn", None)
        try:
            if commit is not None:
                stored: list[AnyEvent] = await commit(
                    self.id, staged, self._base, response=response, anchors=anchors, release=release
                )
            elif response is not None or anchors is not None or release is not None:
                raise InvalidEventError("this store keeps no responses, anchors or leases; flush the events alone")
            else:
                stored = await self.store.append(self.id, staged, self._base) if staged else []
        except StoreError:
            if staged:
                self.stale = True
            raise
        except BaseException:
            if staged:
                await self._rebuild()
            raise
        return stored

    async def discard(self) -> None:
        """Drop what was staged (nothing of it was written) and stop staging; the view goes back to the log."""
        staged, self._staged = self._staged, None
        if staged:
            await self._rebuild()

    async def _rebuild(self) -> None:
        """The view from the store again; if the store cannot be read (the outage that failed the flush, or the
        conversation was deleted), `stale` says so and the error that got us here is the one raised."""
        self.stale = True
        try:
            fresh = await Conversation.load(self.store, self.id, estimator=self.estimator, model=self.model)
        except (StoreError, NotFoundError):
            return
        self.view, self.info, self.stale = fresh.view, fresh.info, False

    def check(self, events: Sequence[Event]) -> None:
        """Refuse events that would break the log (see `check_events`)."""
        check_events(self.view, events)

    async def pin(self, item_id: str, *, pinned: bool = True) -> list[AnyEvent]:
        """Pin an item (a tool call or result pins its whole batch) so compaction always keeps it verbatim."""
        item = await self._find(item_id)
        if item.seq not in self.view.items:
            raise InvalidEventError(
                f"item {item_id!r} is no longer in the view (folded or deleted); only items in view can be pinned. "
                "Use recall or expand to read it"
            )
        targets = self._batch_of(item.seq)
        return await self.append(*(Pin(target=seq, pinned=pinned) for seq in targets))

    async def delete(self, item_id: str) -> Deletion:
        """Erase an item's content (a tool call or result takes its whole batch) and withdraw summaries of it."""
        item = await self._find(item_id)
        targets = self._batch_of(item.seq) if item.seq in self.view.items else [item.seq]
        erased = await self._summaries_covering(targets)
        (stored,) = await self.append(Deletion(targets=targets, erased_summaries=erased))
        assert isinstance(stored, Deletion)
        return stored

    async def _find(self, item_id: str) -> AnyEvent:
        found = await self.store.read(self.id, ids=[item_id])
        if not found:
            raise NotFoundError(f"conversation {self.id!r} has no item {item_id!r}")
        return found[0]

    def _batch_of(self, seq: int) -> list[int]:
        item = self.view.items[seq]
        if not isinstance(item, (ToolCall, ToolResult)):
            return [seq]
        call_id = item.call_id
        batch_id = item.batch_id if isinstance(item, ToolCall) else None
        if batch_id is None:
            for other in self.view.items.values():
                if isinstance(other, ToolCall) and other.call_id == call_id:
                    batch_id = other.batch_id
        calls = {
            other.call_id
            for other in self.view.items.values()
            if isinstance(other, ToolCall) and (other.batch_id == batch_id or other.call_id == call_id)
        }
        return [
            s
            for s, other in self.view.items.items()
            if isinstance(other, (ToolCall, ToolResult)) and other.call_id in calls
        ]

    async def _summaries_covering(self, seqs: list[int]) -> list[int]:
        """Every summary in the active chain that stands for any of `seqs`."""
        erased: list[int] = []
        holder: AnyEvent | None = self.view.summary
        while isinstance(holder, Compaction):
            if any(start <= seq <= end for seq in seqs for start, end in holder.covers) or holder.seq in seqs:
                erased.append(holder.seq)
            if holder.previous is None:
                break
            found = await self.store.read(self.id, ids=[holder.previous])
            holder = found[0] if found else None
        return erased

    # --- reading --------------------------------------------------------------------------------------------------

    def window(self) -> Window:
        return self.view.window()

    def turns(self) -> int:
        return len(turn_groups(self.view.items))

    async def recall(self, query: str, *, limit: int = 5) -> list[RecallHit]:
        """Full-text search over what is no longer shown in full: folded items and masked tool outputs.

        What is current comes first: folded messages whose statements the carried state holds and that are about
        the query come before the index's hits; a hit stating something that a later statement (in the carried
        state, in the view or in another hit) supersedes is marked `superseded` and ranked after the hits that are
        not, so of two statements about one thing the newer is above the older.
        """
        hits: list[RecallHit] = []
        wanted = max(limit * 4, 20)  # candidates, so a current statement ranked low by the index still surfaces
        offset, page = 0, wanted
        while len(hits) < wanted:
            found = await self.store.search(self.id, query, limit=page, offset=offset)
            for hit in found:
                shown = hit.seq in self.view.items and hit.seq not in self.view.masked
                if not shown and len(hits) < wanted:
                    hits.append(RecallHit(hit.event_id, hit.seq, hit.type, hit.snippet, hit.score))
            if len(found) < page:
                break
            offset += page
        hits = await mark_superseded(self.store, self.id, self.view, hits)
        ranked = sorted(hits, key=lambda hit: hit.superseded)  # stable: the index's order otherwise
        stated = await stated_hits(
            self.store, self.id, self.view, query, top=max((hit.score for hit in hits), default=1.0)
        )
        seen = {hit.seq for hit in stated}
        return [*stated, *(hit for hit in ranked if hit.seq not in seen)][:limit]

    async def expand(self, compaction_id: str, *, max_tokens: int) -> Expansion:
        """The events a compaction folded (or masked), verbatim and in order, within `max_tokens`."""
        found = await self.store.read(self.id, ids=[compaction_id])
        if not found or not isinstance(found[0], Compaction):
            raise NotFoundError(f"conversation {self.id!r} has no compaction {compaction_id!r}")
        compaction = found[0]
        wanted = [seq for start, end in compaction.folded for seq in range(start, end + 1)]
        wanted += compaction.masked if compaction.strategy == "mask" else []
        events = _live_items(await self.store.read(self.id, seqs=sorted(set(wanted))))
        shown: list[Item] = []
        used = 0
        for event in events:
            if used + event.tokens > max_tokens:
                break
            shown.append(event)
            used += event.tokens
        return Expansion(compaction.id, shown, len(events), len(shown) < len(events))

    # --- compaction -----------------------------------------------------------------------------------------------

    async def compact(
        self,
        *,
        budget: int,
        policy: CompactionPolicy | None = None,
        summariser: Model | None = None,
        trigger: Trigger = "manual",
        instructions: str | None = None,
        event_id: str | None = None,
    ) -> CompactionResult:
        """Compact now (or, with trigger 'auto', only if the policy says so). Commits only on an unchanged head.

        `event_id` names the compaction event ahead of time (a stream announces it before the summary is written).
        """
        policy = policy or CompactionPolicy()
        items_before, turns_before, tokens_before = len(self.view.items), self.turns(), self.view.tokens
        for _ in range(_COMPACTION_ATTEMPTS):
            head = self.view.head
            event = await self.plan(
                budget=budget, policy=policy, summariser=summariser, trigger=trigger, instructions=instructions
            )
            if event is None:
                return CompactionResult(
                    False,
                    trigger,
                    items_before,
                    items_before,
                    turns_before,
                    turns_before,
                    tokens_before,
                    tokens_before,
                )
            if event_id is not None:
                event = msgspec.structs.replace(event, id=event_id)
            try:
                if self.view.head != head:
                    raise ConflictError(self.id, head, self.view.head)
                (stored,) = await self.append(event)
            except ConflictError:
                await self.refresh()
                continue
            assert isinstance(stored, Compaction)
            return CompactionResult(
                compacted=True,
                trigger=trigger,
                messages_before=items_before,
                messages_after=len(self.view.items),
                turns_before=turns_before,
                turns_after=self.turns(),
                tokens_before=tokens_before,
                tokens_after=self.view.tokens,
                strategy=stored.strategy,
                compaction_id=stored.id,
                summary_length=len(stored.summary or ""),
                error=stored.error,
            )
        raise ConflictError(self.id, self.view.head, self.view.head)

    async def plan(
        self,
        *,
        budget: int,
        policy: CompactionPolicy,
        summariser: Model | None = None,
        trigger: Trigger = "auto",
        instructions: str | None = None,
    ) -> Compaction | None:
        """The compaction `compact` would append now, computed but not appended (None: none is due or possible).
        Its `based_on_head` is the head it was computed at: appending it anywhere else is refused (the head check)."""
        withdrawn = await self._withdrawn() if self.view.summary_stale else []
        return await compact(
            self.view,
            budget=budget,
            policy=policy,
            summariser=summariser,
            estimator=self.estimator,
            trigger=trigger,
            instructions=instructions,
            withdrawn=withdrawn,
        )

    def snapshot(self) -> Conversation:
        """A detached copy at this head, for a background compaction to plan on while turns go on appending to
        this one: the view's containers are copied (the events in them are immutable), the store and the token
        estimator are shared. Never append through it: commit what it plans through the live conversation."""
        view = copy.copy(self.view)
        view.items = dict(view.items)
        view.pinned, view.masked = set(view.pinned), set(view.masked)
        view.covers, view.open_turns = list(view.covers), dict(view.open_turns)
        view.config_events = dict(view.config_events)
        return Conversation(self.store, self.info, view, estimator=self.estimator, model=self.model)

    async def clear(self) -> CompactionResult:
        """Start a fresh view: only the instructions, the configuration and pinned items stay. The log keeps all,
        and what was cleared stays searchable by recall and readable by `expand` of the returned compaction."""
        view = self.view
        items_before, turns_before, tokens_before = len(view.items), self.turns(), view.tokens
        keep = {
            seq
            for seq, item in view.items.items()
            if seq in view.pinned or (isinstance(item, Message) and item.role in KEEP_ROLES)
        }
        cleared = {seq for seq in view.items if seq not in keep}
        event = Compaction(
            strategy="clear",
            trigger="manual",
            kept=[seq for seq in view.kept_seqs if seq not in cleared],
            pinned=sorted(view.pinned),
            folded=ranges(view, cleared),
            open_turns=dict(view.open_turns),
            based_on_head=view.head,
            tokens_before=tokens_before,
            totals=view.totals,
        )
        (stored,) = await self.append(event)
        return CompactionResult(
            compacted=True,
            trigger="manual",
            messages_before=items_before,
            messages_after=len(view.items),
            turns_before=turns_before,
            turns_after=self.turns(),
            tokens_before=tokens_before,
            tokens_after=self.view.tokens,
            strategy="clear",
            compaction_id=stored.id,
        )

    async def fit(
        self,
        *,
        budget: int,
        policy: CompactionPolicy | None = None,
        summariser: Model | None = None,
        event_id: str | None = None,
    ) -> CompactionResult:
        """Compact if the policy says so, then guarantee the view fits `budget` (or raise ContextOverflowError)."""
        result = await self.compact(
            budget=budget, policy=policy, summariser=summariser, trigger="auto", event_id=event_id
        )
        if self.view.tokens > budget:
            result = await self.compact(budget=budget, policy=policy, summariser=summariser, trigger="reactive")
        if self.view.tokens > budget:
            raise ContextOverflowError(
                f"the view needs ~{self.view.tokens} tokens and cannot be compacted under the {budget}-token budget"
            )
        return result

    async def _withdrawn(self) -> list[Item]:
        """The items a withdrawn summary stood for (newest first up to a cap), to summarise them again."""
        items: list[Item] = []
        for start, end in reversed(self.view.covers):
            take = min(end - start + 1, _WITHDRAWN_MAX_EVENTS - len(items))
            events = await self.store.read(self.id, after=end - take, limit=take)
            items[:0] = _live_items(events)
            if len(items) >= _WITHDRAWN_MAX_EVENTS:
                break
        return items


def _live_items(events: list[AnyEvent]) -> list[Item]:
    """The items among `events` that were not erased and whose turn did not fail (ranges may span such turns)."""
    failed = {
        e.turn_id for e in events if isinstance(e, TurnMarker) and e.status in ("failed", "interrupted", "blocked")
    }
    return [
        e
        for e in events
        if isinstance(e, (Message, ToolCall, ToolResult, Reasoning))
        and not e.redacted
        and (e.turn_id is None or e.turn_id not in failed)
    ]
