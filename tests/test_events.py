"""The event vocabulary and its codec: round trips, and clear errors for what cannot be read."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from contextfold import InvalidEventError, SchemaVersionError
from contextfold.events import (
    EVENT_TYPES,
    AnyEvent,
    Compaction,
    ConfigChange,
    Deletion,
    FilePart,
    ImagePart,
    Message,
    Pin,
    Reasoning,
    TextPart,
    ToolCall,
    ToolResult,
    ToolSpec,
    TurnMarker,
    Usage,
    decode,
    encode,
    validate,
)

text = st.text(max_size=40)
parts = st.one_of(
    st.builds(TextPart, text=text),
    st.builds(ImagePart, url=text, detail=st.sampled_from(["auto", "low", "high"])),
    st.builds(FilePart, media_type=text, data=st.none() | text),
)
events: st.SearchStrategy[AnyEvent] = st.one_of(
    st.builds(Message, role=st.sampled_from(["system", "developer", "user", "assistant"]), content=st.lists(parts)),
    st.builds(ToolCall, call_id=text, name=text, arguments=text, batch_id=text),
    st.builds(ToolResult, call_id=text, output=text, is_error=st.booleans(), summary=st.none() | text),
    st.builds(Reasoning, provider=text, data=st.dictionaries(text, text), text=st.none() | text),
    st.builds(TurnMarker, status=st.sampled_from(["started", "completed", "failed", "interrupted"])),
    st.builds(ConfigChange, system_prompt=st.none() | text, tools=st.lists(st.builds(ToolSpec, name=text))),
    st.builds(Pin, target=st.integers(1, 10**9), pinned=st.booleans()),
    st.builds(Deletion, targets=st.lists(st.integers(1, 10**9))),
    st.builds(Usage, model=text, input_tokens=st.integers(0, 10**7), output_tokens=st.integers(0, 10**7)),
    st.builds(
        Compaction,
        strategy=st.sampled_from(["mask", "summary", "fallback"]),
        trigger=st.sampled_from(["auto", "manual", "reactive", "recompute"]),
        kept=st.lists(st.integers(1, 10**6)),
        folded=st.lists(st.tuples(st.integers(1, 100), st.integers(100, 200))),
        summary=st.none() | text,
    ),
)


@given(events)
def test_every_event_round_trips(event: AnyEvent) -> None:
    assert decode(encode(event)) == event
    assert validate(event) == event
    assert event.type_name() in EVENT_TYPES


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b'{"type": "telepathy"}', InvalidEventError, "unknown event type 'telepathy'; known types are"),
        (b'{"type": "message", "role": "robot", "content": []}', InvalidEventError, "malformed 'message' event"),
        (b'{"type": "tool_call", "call_id": "c"}', InvalidEventError, "missing required field"),
        (b"[1, 2]", InvalidEventError, "not a JSON object"),
        (b"{nope", InvalidEventError, "not a JSON object"),
        (b'{"type": "message", "schema_version": 7, "role": "user", "content": []}', SchemaVersionError, "version 7"),
        (b'{"type": "pin", "schema_version": 2, "target": "x"}', SchemaVersionError, "upgrade contextfold"),
    ],
)
def test_unreadable_events_say_what_is_wrong(data: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        decode(data)


def test_events_built_in_python_are_checked_like_decoded_ones() -> None:
    with pytest.raises(InvalidEventError, match="malformed 'message'"):
        validate(Message(role="robot", content=[]))  # type: ignore[arg-type]
    with pytest.raises(InvalidEventError, match="is not an event type"):
        validate(TextPart("x"))  # type: ignore[arg-type]


def test_config_distinguishes_unset_from_cleared() -> None:
    cleared = decode(encode(ConfigChange(system_prompt=None)))
    assert isinstance(cleared, ConfigChange)
    assert cleared.system_prompt is None
    assert cleared.tools is msgspec.UNSET
