"""What both stores share: preparing events for an append, erasing content, checkpoints, and argument checks.

The backends differ only in SQL; every rule about what an append, a deletion or a search accepts lives here,
so the two stores cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import msgspec

from .._errors import InvalidEventError, InvalidRequestError, StoreError
from ..events import (
    AnyEvent,
    Compaction,
    Deletion,
    Event,
    Message,
    Reasoning,
    ToolCall,
    ToolResult,
    decode,
    encode,
    text_of,
    validate,
)
from ._protocol import Checkpoint

_SEARCHABLE = (Message, ToolCall, ToolResult, Reasoning)
_WORD = re.compile(r"\w+", re.UNICODE)
MAX_QUERY_TERMS = 32


class Row(msgspec.Struct, frozen=True):
    seq: int
    id: str
    type: str
    body: bytes
    search_text: str | None
    event: AnyEvent


def prepare(conversation_id: str, events: Sequence[Event], expected_head: int) -> list[Row]:
    """Validate events and stamp them with the conversation and their sequence numbers."""
    if not events:
        raise InvalidEventError("append needs at least one event")
    rows: list[Row] = []
    seen: set[str] = set()
    for offset, event in enumerate(events, start=1):
        if event.conversation_id not in ("", conversation_id):
            raise InvalidEventError(
                f"event {event.id} belongs to conversation {event.conversation_id!r}, not {conversation_id!r}"
            )
        if event.id in seen:
            raise InvalidEventError(f"event id {event.id!r} appears twice in one append")
        seen.add(event.id)
        stamped = msgspec.structs.replace(event, conversation_id=conversation_id, seq=expected_head + offset)
        checked = validate(stamped)
        if isinstance(checked, Deletion):
            deletion_targets(checked)
        # PostgreSQL text cannot hold NUL; the body (JSON-escaped) keeps the exact content.
        searchable = text_of(checked).replace("\x00", " ") if isinstance(checked, _SEARCHABLE) else ""
        rows.append(Row(checked.seq, checked.id, checked.type_name(), encode(checked), searchable or None, checked))
    return rows


def deletion_targets(deletion: Deletion) -> list[int]:
    """The sequence numbers a deletion erases, each of which must precede it."""
    targets = sorted({*deletion.targets, *deletion.erased_summaries})
    later = [seq for seq in targets if seq < 1 or seq >= deletion.seq]
    if later:
        raise InvalidEventError(
            f"deletion {deletion.id} at seq {deletion.seq} can only erase earlier events, not seqs {later}"
        )
    return targets


def check_targets_found(deletion: Deletion, targets: Iterable[int], found: Iterable[int]) -> None:
    missing = sorted(set(targets) - set(found))
    if missing:
        raise InvalidEventError(f"deletion {deletion.id} targets events that do not exist: seqs {missing}")


def redacted_body(body: bytes) -> bytes:
    """A stored event's body with its content erased."""
    return encode(redact(decode(body)))


def redact(event: AnyEvent) -> AnyEvent:
    """The event with its content erased; what remains says that something was here."""
    replace = msgspec.structs.replace
    if isinstance(event, Message):
        return replace(event, content=[], redacted=True, tokens=0)
    if isinstance(event, ToolCall):
        return replace(event, arguments="{}", redacted=True, tokens=0)
    if isinstance(event, ToolResult):
        return replace(event, output="", summary=None, redacted=True, tokens=0)
    if isinstance(event, Reasoning):
        return replace(event, data={}, text=None, redacted=True, tokens=0)
    if isinstance(event, Compaction):
        return replace(event, summary=None, carried=[], redacted=True, tokens=0)
    return event


def query_terms(query: str) -> list[str]:
    """The words of a free-text query, without any operator syntax a user could trip over."""
    terms = [term.lower() for term in _WORD.findall(query)]
    return list(dict.fromkeys(terms))[:MAX_QUERY_TERMS]


def check_query(query: str) -> list[str]:
    terms = query_terms(query)
    if not terms:
        raise InvalidRequestError(f"search query {query!r} has no words to look for; pass at least one word")
    return terms


def check_limit(limit: int | None, what: str) -> None:
    if limit is not None and limit < 0:
        raise InvalidRequestError(f"{what} needs limit >= 0 (or None for no limit), got {limit}")


def check_page(limit: int, offset: int) -> None:
    if limit < 1 or offset < 0:
        raise InvalidRequestError(f"search needs limit >= 1 and offset >= 0, got limit={limit}, offset={offset}")


def checkpoint_seqs(compaction: Compaction) -> list[int]:
    """The earlier events a checkpointed load reads beside a compaction: what it kept, the summary holder."""
    wanted = list(compaction.kept)
    if compaction.summary_seq is not None:
        wanted.append(compaction.summary_seq)
    return wanted


def build_checkpoint(
    head: int, compaction: AnyEvent | None, kept: Iterable[AnyEvent], after: list[AnyEvent]
) -> Checkpoint:
    if compaction is None:
        return Checkpoint(head, None, {}, None, after)
    if not isinstance(compaction, Compaction):
        kind = compaction.type_name()
        raise StoreError(f"checkpoint seq {compaction.seq} holds a {kind!r} event, not a compaction")
    held = {event.seq: event for event in kept}
    holder = held.get(compaction.summary_seq) if compaction.summary_seq is not None else None
    return Checkpoint(head, compaction, held, holder if isinstance(holder, Compaction) else None, after)
