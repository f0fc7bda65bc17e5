"""Forking: a new conversation whose log is a copy of another's up to a point.

The copy keeps every sequence number (compactions refer to events by seq), gives every event a new id (ids are
unique across the store) and rewrites the id references between events. Turns still open at the cut are closed
as completed, so the items before the cut stay in the view.
"""

from __future__ import annotations

import msgspec

from ..events import AnyEvent, Compaction, Event, TurnMarker, new_id
from ..store import ServerStore


async def fork(
    store: ServerStore,
    source_id: str,
    upto_seq: int,
    *,
    tenant: str,
    metadata: dict[str, str] | None = None,
) -> str:
    """Copy `source_id`'s events 1..upto_seq into a new conversation of `tenant`; returns its id."""
    events = await store.read(source_id, limit=upto_seq) if upto_seq else []
    ids = {event.id: new_id() for event in events}
    copied: list[Event] = [copy_event(event, ids) for event in events]
    opened: dict[str, None] = {}
    for event in events:
        if isinstance(event, TurnMarker) and event.turn_id:
            if event.status == "started":
                opened[event.turn_id] = None
            else:
                opened.pop(event.turn_id, None)
    copied += [TurnMarker(status="completed", turn_id=turn, reason="forked") for turn in opened]
    info = await store.conversations.create(
        metadata={**(metadata or {}), "forked_from": source_id, "forked_at": str(upto_seq)}, tenant=tenant
    )
    if copied:
        await store.append(info.id, copied, 0)
    return info.id


def copy_event(event: AnyEvent, ids: dict[str, str]) -> Event:
    """The event under its new id (`ids` maps old to new), unnumbered, ready to append to another conversation."""
    fields: dict[str, object] = {"id": ids[event.id], "conversation_id": "", "seq": 0}
    if isinstance(event, Compaction) and event.previous:
        fields["previous"] = ids.get(event.previous, event.previous)
    return msgspec.structs.replace(event, **fields)
