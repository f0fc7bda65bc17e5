"""Field access for OpenAI items a client sent: every mistake an `InvalidRequestError` naming the exact path.

Shared by the Responses/Conversations item parsers (`_items_input`, `_items_tools`) and the Chat Completions and
Messages parsers, so a wrong field reads the same whichever API it came through.
"""

from __future__ import annotations

from ..._errors import InvalidRequestError

Item = dict[str, object]
_TEXT_PARTS = ("input_text", "output_text", "text")
"""The text part types; a tool output may hold only these."""


def _kind(value: object) -> str:
    """The JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def shown(value: object) -> str:
    """A found value for a message: `missing`, a quoted string, or the JSON type."""
    if value is None:
        return "missing"
    return repr(value) if isinstance(value, str) else _kind(value)


def wrong(where: str, expected: str, value: object) -> InvalidRequestError:
    """The error for a field that is missing (null counts as missing) or not of the `expected` kind."""
    if value is None:
        return InvalidRequestError(f"{where} is missing; it must be {expected}", where)
    return InvalidRequestError(f"{where} must be {expected}, not {_kind(value)}", where)


def _object(value: object, path: str) -> Item:
    if not isinstance(value, dict):
        raise InvalidRequestError(f"{path} must be an object, not {_kind(value)}", path)
    return value


def _at(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def string_at(item: Item, key: str, path: str, *, non_empty: bool = False) -> str:
    """A required string field (`non_empty`: and not empty)."""
    where = _at(path, key)
    value = item.get(key)
    if not isinstance(value, str):
        raise wrong(where, "a string", value)
    if non_empty and not value:
        raise InvalidRequestError(f"{where} is empty; it must be a non-empty string", where)
    return value


def optional_string_at(item: Item, key: str, path: str) -> str | None:
    """An optional string field: absent and null both give None."""
    value = item.get(key)
    if value is None or isinstance(value, str):
        return value
    raise InvalidRequestError(f"{_at(path, key)} must be a string or null, not {_kind(value)}", _at(path, key))


def _list(item: Item, key: str, path: str) -> list[object]:
    value = item.get(key)
    if not isinstance(value, list):
        raise wrong(f"{path}.{key}", "an array", value)
    return value
