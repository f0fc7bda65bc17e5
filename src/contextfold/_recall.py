"""Recall's ranking: current statements first, and hits a later statement supersedes marked (see
`Conversation.recall`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .compaction import _state
from .events import CarriedFact, Message
from .store import Store
from .view import View


@dataclass(frozen=True, slots=True)
class RecallHit:
    """A folded-away event that matches a recall query."""

    event_id: str
    seq: int
    type: str
    snippet: str
    score: float
    superseded: bool = False
    """A later statement (in the carried state, the view or another hit) is about the same thing."""


async def stated_hits(store: Store, conversation_id: str, view: View, query: str, *, top: float) -> list[RecallHit]:
    """The folded messages whose statements the carried state holds (current by construction) and that are
    about the query's words, best match first: the index ranks them among everything that shares a word."""
    summary = view.active_summary()
    key = _state.subject_key(query).split(" | ")
    wanted = set(key[1].split()) if summary is not None and len(key) > 1 else set()
    if not wanted or summary is None:
        return []
    scored = []
    for fact in summary.carried:
        words = set(fact.key.split(" | ")[1].split()) if " | " in fact.key else set(fact.key.split())
        overlap = len(wanted & words)
        if overlap * 2 >= len(wanted) and fact.seq not in view.items:
            scored.append((-overlap, -fact.seq, fact))
    scored.sort(key=lambda entry: entry[:2])
    seqs = list(dict.fromkeys(fact.seq for _, _, fact in scored))
    events = {event.seq: event for event in await store.read(conversation_id, seqs=seqs)} if seqs else {}
    return [
        RecallHit(events[seq].id, seq, events[seq].type_name(), _snippet(scored, seq), top)
        for seq in seqs
        if seq in events and not getattr(events[seq], "redacted", False)
    ]


async def mark_superseded(store: Store, conversation_id: str, view: View, hits: list[RecallHit]) -> list[RecallHit]:
    """The hits stating something a later statement (carried, in the view, or in another hit) supersedes, marked."""
    events = await store.read(conversation_id, ids=[hit.event_id for hit in hits]) if hits else []
    stated = {event.seq: _state.extract([event]) for event in events if isinstance(event, Message)}
    summary = view.active_summary()
    pool = [
        *(summary.carried if summary else []),
        *_state.extract(view.items.values()),
        *(fact for facts in stated.values() for fact in facts),
    ]
    marked = []
    for hit in hits:
        facts = stated.get(hit.seq, [])
        if any(_superseded(fact, pool) for fact in facts):
            hit = dataclasses.replace(hit, superseded=True)
        marked.append(hit)
    return marked


def _snippet(scored: list[tuple[int, int, CarriedFact]], seq: int) -> str:
    return " ".join(fact.text for _, _, fact in scored if fact.seq == seq)


def _superseded(fact: CarriedFact, pool: list[CarriedFact]) -> bool:
    return any(other.seq > fact.seq and _state.supersedes(other, fact) for other in pool)
