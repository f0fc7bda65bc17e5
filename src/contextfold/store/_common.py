"""What both stores share: preparing events for an append, erasing content, and full-text query syntax."""

from __future__ import annotations

import re
from collections.abc import Sequence

import msgspec

from .._errors import InvalidEventError, InvalidRequestError
from ..events import (
    AnyEvent,
    Compaction,
    Event,
    Message,
    Reasoning,
    ToolCall,
    ToolResult,
    encode,
    text_of,
    validate,
)

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
        searchable = text_of(checked) if isinstance(checked, _SEARCHABLE) else ""
        rows.append(
            Row(checked.seq, checked.id, checked.type_name(), encode(checked), searchable or None, checked)
        )
    return rows


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
        return replace(event, summary=None, redacted=True, tokens=0)
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
