"""A client's history checked against a stored log: does it extend the log, repeat its end, or contradict it?

Anchors (`_proxy_match`) find a candidate conversation by hashes of the client's history. A chain anchor proves
the whole prefix, instructions included; a tail anchor (the last two messages alone) or a conversation named by the
`X-Contextfold-Conversation` header proves nothing about the messages before. Splicing such a history onto a
conversation whose log says something else would send the model another client's history and drop what this one
sent, so those matches are checked here against the log itself.

The comparison is by *signature*, in the client's view of the log: what each message says, not how a wire spells
it. Messages compare by role and text (whitespace folded: one answer streamed over several steps reaches the client
as one message), calls by name and arguments (JSON normalised), results by output. Reasoning, configuration, turn
markers and usage are not compared; items of failed or interrupted turns never reached the client; calls of the
proxy's hidden tools (and their results) were never shown to it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..._conversation import Conversation
from ..._errors import BusyError
from ...events import Event, FilePart, ImagePart, Message, TextPart, ToolCall, ToolResult, TurnMarker
from ...store import ServerStore
from .._fork import fork
from .._state import ServerState
from ._proxy_match import Match, moved_on

Signature = tuple[str, str]


class Built(Protocol):
    """A client's message with the events it becomes (a proxied message, a Responses input item)."""

    @property
    def events(self) -> Sequence[Event]: ...


def _fold(text: str) -> str:
    return " ".join(text.split())


def _arguments(text: str) -> str:
    try:
        return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    except (ValueError, RecursionError):
        return _fold(text)


def _content(message: Message) -> str:
    parts: list[str] = []
    for part in message.content:
        if isinstance(part, TextPart):
            parts.append(part.text)
        elif isinstance(part, ImagePart):
            parts.append(f"[image {part.url}]")
        elif isinstance(part, FilePart):
            parts.append(f"[file {part.file_id or part.filename or len(part.data or '')}]")
    return _fold(" ".join(parts))


def signatures(events: Iterable[Event], *, hidden: Collection[str] = ()) -> list[tuple[Signature, int]]:
    """The signatures of `events` (with the seq of the event each ends at), in the client's view of them."""
    events = events_list(events)
    failed = {
        e.turn_id for e in events if isinstance(e, TurnMarker) and e.status in ("failed", "interrupted") and e.turn_id
    }
    out: list[tuple[Signature, int]] = []
    hidden_calls: set[str] = set()
    for event in events:
        if event.turn_id is not None and event.turn_id in failed:
            continue
        signature: Signature | None = None
        if isinstance(event, Message) and not event.redacted:
            signature = (event.role, _content(event))
            if event.role == "assistant" and out and out[-1][0][0] == "assistant":
                # one answer over several steps reaches the client as one message
                merged = (out[-1][0][0], _fold(out[-1][0][1] + " " + signature[1]))
                out[-1] = (merged, event.seq)
                continue
        elif isinstance(event, ToolCall):
            if event.name in hidden:
                hidden_calls.add(event.call_id)
                continue
            signature = ("call", f"{event.name}\0{_arguments(event.arguments)}")
        elif isinstance(event, ToolResult):
            if event.call_id in hidden_calls:
                hidden_calls.discard(event.call_id)
                continue
            signature = ("result", _fold(event.output))
        if signature is not None:
            out.append((signature, event.seq))
    return out


def events_list(events: Iterable[Event]) -> list[Event]:
    return events if isinstance(events, list) else list(events)


def client_signatures(messages: Sequence[Sequence[Event]]) -> list[tuple[Signature, int]]:
    """The signatures of a client's messages (each given as the events it becomes), with each one's index."""
    out: list[tuple[Signature, int]] = []
    for index, events in enumerate(messages):
        for signature, _ in signatures(events):
            if signature[0] == "assistant" and out and out[-1][0][0] == "assistant":
                out[-1] = (("assistant", _fold(out[-1][0][1] + " " + signature[1])), index)
            else:
                out.append((signature, index))
    return out


async def stored_signatures(
    store: ServerStore, conversation_id: str, upto: int | None = None, *, hidden: Collection[str] = ()
) -> tuple[list[tuple[Signature, int]], int]:
    """The conversation's log in signatures, up to `upto` (its head when None), and that head."""
    events = await store.read(conversation_id, limit=upto) if upto is not None else await store.read(conversation_id)
    head = events[-1].seq if events else 0
    return signatures(events, hidden=hidden), head


def is_tail_of(stored: Sequence[tuple[Signature, int]], client: Sequence[tuple[Signature, int]]) -> bool:
    """Whether the client's history is the end of the stored one (a client that trimmed the start of its own)."""
    if not client or len(client) > len(stored):
        return False
    return [s for s, _ in stored[-len(client) :]] == [s for s, _ in client]


@dataclass(frozen=True, slots=True)
class Overlap:
    """How a client's history lines up with a stored log, from the start."""

    matched: int
    """The client's messages that the log already holds, whole (never the last one: it is the new input)."""
    cut: int | None
    """None: the history extends the log (everything stored is among the matched messages). Otherwise the log
    goes on differently after them, and a branch must continue a copy of the log up to this seq."""


def overlap(stored: Sequence[tuple[Signature, int]], client: Sequence[tuple[Signature, int]], count: int) -> Overlap:
    """Line up `client` (signatures of `count` messages) with `stored`, both from their start."""
    same = 0
    while same < min(len(stored), len(client)) and stored[same][0] == client[same][0]:
        same += 1
    # whole messages only: the message at `same` (if any) was not matched in full
    matched = client[same][1] if same < len(client) else count
    matched = min(matched, count - 1)
    consumed = sum(1 for _, index in client if index < matched)
    if consumed >= len(stored):
        return Overlap(matched, None)
    # the copy ends with the last matched item (a turn left open there is closed by the fork)
    return Overlap(matched, stored[consumed - 1][1] if consumed else 0)


async def tail_holds(store: ServerStore, match: Match, messages: Sequence[Built], hidden: Collection[str]) -> bool:
    """Whether the stored log, where a tail anchor left it, ends with the client's whole history before the match
    (a client that trimmed the start of its own history, or rewrote its instructions)."""
    stored, _ = await stored_signatures(store, match.conversation_id, match.seq, hidden=hidden)
    return is_tail_of(stored, client_signatures([m.events for m in messages[: match.matched]]))


async def hold_match(
    state: ServerState,
    exit: contextlib.AsyncExitStack,
    tenant: str,
    match: Match,
    model: str | None,
    metadata: dict[str, str],
) -> Conversation:
    """The matched conversation, held (released by `exit`), or a fork of it as it stood at the match when it went
    on without this history (the client regenerated or edited an answer, or another request on the same history
    is running)."""
    with contextlib.suppress(BusyError):
        head = await exit.enter_async_context(state.locks.hold(match.conversation_id, queue=False))
        if not await moved_on(state.store, match.conversation_id, match.seq, head=head):
            return await state.views.current(match.conversation_id, model)
        await exit.aclose()
    forked = await fork(state.store, match.conversation_id, match.seq, tenant=tenant, metadata=metadata)
    await exit.enter_async_context(state.locks.hold(forked))
    return await state.views.current(forked, model)
