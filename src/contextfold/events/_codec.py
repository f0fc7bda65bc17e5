"""The one (de)serialiser of events: JSON through msgspec, validated on the way in and out."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from .._errors import InvalidEventError, SchemaVersionError
from ._types import EVENT_TYPES, SCHEMA_VERSION, AnyEvent, Event


class _Envelope(msgspec.Struct):
    type: str = ""
    schema_version: int = SCHEMA_VERSION


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AnyEvent)
_envelope = msgspec.json.Decoder(_Envelope)


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


def decode(data: bytes | str) -> AnyEvent:
    """Decode one stored or submitted event, naming what is wrong when it cannot be read."""
    try:
        event: AnyEvent = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise _explain(data, exc) from None
    if event.schema_version != SCHEMA_VERSION:
        raise _version_error(event.type_name(), event.schema_version)
    return event


def decode_many(rows: Iterable[bytes | str]) -> list[AnyEvent]:
    return [decode(row) for row in rows]


def validate(event: Event) -> AnyEvent:
    """Check an event built in Python the way a decoded one is checked (types, tags, literals)."""
    if type(event) not in EVENT_TYPES.values():
        raise InvalidEventError(
            f"{type(event).__name__} is not an event type; use one of {', '.join(sorted(EVENT_TYPES))}"
        )
    try:
        return decode(encode(event))
    except (TypeError, msgspec.EncodeError) as exc:
        raise InvalidEventError(f"{type(event).__name__} cannot be stored: {exc}") from None


def _explain(data: bytes | str, exc: msgspec.DecodeError) -> Exception:
    try:
        env = _envelope.decode(data)
    except msgspec.DecodeError:
        return InvalidEventError(f"event is not a JSON object with a 'type': {exc}")
    if env.schema_version != SCHEMA_VERSION:
        return _version_error(env.type or "?", env.schema_version)
    if env.type not in EVENT_TYPES:
        known = ", ".join(sorted(EVENT_TYPES))
        return InvalidEventError(f"unknown event type {env.type!r}; known types are: {known}")
    return InvalidEventError(f"malformed {env.type!r} event: {exc}")


def _version_error(kind: str, version: int) -> SchemaVersionError:
    return SchemaVersionError(
        f"{kind!r} event has schema version {version}, this build reads version {SCHEMA_VERSION}; "
        "upgrade contextfold (or re-export the event with this version)"
    )
