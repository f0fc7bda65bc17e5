"""The event vocabulary: everything that can happen to a conversation.

Events are small immutable structs with a `type` tag. The store stamps `conversation_id` and `seq` when it appends
them; everything else is set by whoever creates the event. Bump `SCHEMA_VERSION` (and add an upgrade in `_codec`)
whenever a stored shape changes.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

SCHEMA_VERSION = 1

Role = Literal["system", "developer", "user", "assistant"]
TurnStatus = Literal["started", "completed", "failed", "interrupted", "blocked"]
"""`blocked`: a guardrail refused the turn; like `failed` and `interrupted`, its items leave the view."""
Strategy = Literal["mask", "summary", "fallback", "clear"]
Trigger = Literal["auto", "manual", "reactive", "recompute"]
SeqRange = tuple[int, int]


def new_id(prefix: str = "ev") -> str:
    """A stable, unguessable identifier such as `ev_4f0c…`."""
    return f"{prefix}_{secrets.token_hex(12)}"


def _now() -> float:
    return time.time()


# --- content parts -------------------------------------------------------------------------------------------


class TextPart(msgspec.Struct, tag_field="type", tag="text", frozen=True):
    text: str


class ImagePart(msgspec.Struct, tag_field="type", tag="image", frozen=True, omit_defaults=True):
    url: str
    detail: Literal["auto", "low", "high"] = "auto"


class FilePart(msgspec.Struct, tag_field="type", tag="file", frozen=True, omit_defaults=True):
    """A file by id or inline data (base64), with its media type."""

    media_type: str
    file_id: str | None = None
    data: str | None = None
    filename: str | None = None


Part = TextPart | ImagePart | FilePart


class ToolSpec(msgspec.Struct, frozen=True, omit_defaults=True):
    """A function the model may call: its name, what it does, and a JSON schema of its arguments."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = msgspec.field(default_factory=dict)


class TokenUsage(msgspec.Struct, frozen=True, omit_defaults=True):
    input_tokens: int = 0
    output_tokens: int = 0


class Totals(msgspec.Struct, frozen=True, omit_defaults=True):
    """Running totals of a conversation: model requests and their tokens (from usage events), and compactions."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    compactions: int = 0


# --- events --------------------------------------------------------------------------------------------------


class Event(msgspec.Struct, tag_field="type", kw_only=True, frozen=True, omit_defaults=True):
    """Fields every event carries. `tokens` is the cached token estimate of the event's content."""

    id: str = msgspec.field(default_factory=new_id)
    conversation_id: str = ""
    seq: int = 0
    turn_id: str | None = None
    created_at: float = msgspec.field(default_factory=_now)
    schema_version: int = SCHEMA_VERSION
    tokens: int = 0

    def type_name(self) -> str:
        """The event's `type` tag."""
        tag = type(self).__struct_config__.tag
        return tag if isinstance(tag, str) else type(self).__name__


class Message(Event, tag="message", frozen=True):
    role: Role
    content: list[Part]
    redacted: bool = False


class ToolCall(Event, tag="tool_call", frozen=True):
    """One call of a batch; the calls of a parallel batch share `batch_id` and are kept or folded together."""

    call_id: str
    name: str
    arguments: str
    batch_id: str
    redacted: bool = False


class ToolResult(Event, tag="tool_result", frozen=True):
    """A tool's output. `summary` is the tool's own compact version, used when old output is masked."""

    call_id: str
    output: str
    is_error: bool = False
    summary: str | None = None
    redacted: bool = False


class Reasoning(Event, tag="reasoning", frozen=True):
    """Opaque provider reasoning (for example encrypted content), passed back to the same provider only."""

    provider: str
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    text: str | None = None
    redacted: bool = False


class TurnMarker(Event, tag="turn", frozen=True):
    status: TurnStatus
    reason: str | None = None


class ConfigChange(Event, tag="config", frozen=True):
    """Runtime configuration. UNSET leaves a setting as it was; None clears it."""

    system_prompt: str | UnsetType | None = UNSET
    tools: list[ToolSpec] | UnsetType | None = UNSET
    max_output_tokens: int | UnsetType | None = UNSET


class Pin(Event, tag="pin", frozen=True):
    """Pins (or unpins) the item at `target` so compaction always keeps it verbatim."""

    target: int
    pinned: bool = True


class Deletion(Event, tag="deletion", frozen=True):
    """A tombstone. The store erases the content of `targets` and the summaries of `erased_summaries`."""

    targets: list[int]
    erased_summaries: list[int] = msgspec.field(default_factory=list)


class Usage(Event, tag="usage", frozen=True):
    """What the provider reported for one inference request, beside what we estimated for it."""

    model: str
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0
    estimated_input_tokens: int | None = None
    context_window: int | None = None
    """The window the request was made against, and the budget in it (the window less the output reserved): the
    conversation's, not the server's, so a server started with other flags shows it as it ran. None in logs written
    before these were recorded."""
    budget: int | None = None


class CarriedFact(msgspec.Struct, frozen=True, omit_defaults=True):
    """A statement a compaction carried forward from what it folded: what kind it is, the words it is about (its
    `key`: a later statement about the same thing supersedes it), its text (near-verbatim) and the seq it came from."""

    kind: str
    key: str
    text: str
    seq: int


class Compaction(Event, tag="compaction", frozen=True):
    """A fold of older history. It never edits earlier events; it says what the view is from here on.

    `kept` lists every earlier event the view still holds (items and the config events in force), so the view after
    this event can be rebuilt from this event, those events and the summary holder alone (a checkpoint).
    `covers` is every range of events the active summary stands for, its predecessors' included; `open_turns` the
    turns still running (with the seq of their start), so a process that finds them open after a crash can mark
    them interrupted. `totals` carries the conversation's running totals up to (not including) this event, so a
    view loaded from this checkpoint knows them without reading the whole log. Strategy `clear` starts a fresh view:
    it keeps only the instructions, the configuration and pinned items, and has no summary.
    `carried` is the carried state (the statements of everything folded so far that still hold, superseded ones
    dropped), which the summary text renders and the next compaction builds on; `check` records what became of the
    model's summary (accepted, completed or replaced by the deterministic digest, and why). Both are additive:
    events written before them read as an empty state and no check.
    """

    strategy: Strategy
    trigger: Trigger
    kept: list[int]
    pinned: list[int] = msgspec.field(default_factory=list)
    masked: list[int] = msgspec.field(default_factory=list)
    folded: list[SeqRange] = msgspec.field(default_factory=list)
    covers: list[SeqRange] = msgspec.field(default_factory=list)
    open_turns: dict[str, int] = msgspec.field(default_factory=dict)
    summary: str | None = None
    summary_seq: int | None = None
    previous: str | None = None
    based_on_head: int = 0
    model: str | None = None
    instructions: str | None = None
    tokens_before: int = 0
    tokens_after: int = 0
    usage: TokenUsage | None = None
    duration_ms: float = 0.0
    error: str | None = None
    totals: Totals | None = None
    redacted: bool = False
    carried: list[CarriedFact] = msgspec.field(default_factory=list)
    check: str | None = None


AnyEvent = Message | ToolCall | ToolResult | Reasoning | TurnMarker | ConfigChange | Pin | Deletion | Usage | Compaction
Item = Message | ToolCall | ToolResult | Reasoning
"""Events that are part of what the model sees."""

ITEM_TYPES: tuple[type[Event], ...] = (Message, ToolCall, ToolResult, Reasoning)
EVENT_TYPES: dict[str, type[Event]] = {
    "message": Message,
    "tool_call": ToolCall,
    "tool_result": ToolResult,
    "reasoning": Reasoning,
    "turn": TurnMarker,
    "config": ConfigChange,
    "pin": Pin,
    "deletion": Deletion,
    "usage": Usage,
    "compaction": Compaction,
}


def text_of(event: Event) -> str:
    """The searchable text of an event (empty for events with none)."""
    if isinstance(event, Message):
        return "\n".join(p.text for p in event.content if isinstance(p, TextPart))
    if isinstance(event, ToolCall):
        return f"{event.name} {event.arguments}"
    if isinstance(event, ToolResult):
        return event.output
    if isinstance(event, Reasoning):
        return event.text or ""
    if isinstance(event, Compaction):
        return event.summary or ""
    return ""


def user(text: str, **fields: Any) -> Message:
    """A user text message."""
    return Message(role="user", content=[TextPart(text)], **fields)


def assistant(text: str, **fields: Any) -> Message:
    """An assistant text message."""
    return Message(role="assistant", content=[TextPart(text)], **fields)


def system(text: str, **fields: Any) -> Message:
    """A system text message (kept verbatim in every view)."""
    return Message(role="system", content=[TextPart(text)], **fields)
