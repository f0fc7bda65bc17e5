"""Request bodies that spell a lone UTF-16 surrogate, refused at the edge with a 400 naming the field.

JSON may write a character as `\\uXXXX`, and a surrogate half on its own (`"hi \\ud800"`) is valid JSON syntax that
stands for no character. Python's JSON decoder (which FastAPI uses) turns it into a `str` that cannot be encoded
as UTF-8, so the request got as far as storing its first event and failed there: a 500, with the conversation it
had created left behind. msgspec (the proxy's decoder) refuses it, but as "Input data was truncated", naming
nothing. So every request body is checked here once, for every route, before any route reads it.

Only the escape can spell a surrogate (UTF-8 bytes cannot: encoded surrogates are invalid UTF-8, which the
decoders refuse), so the body is looked at again only when its bytes hold `\\ud` or `\\uD` at all, and decoded a
second time (which finds the field) only when an escape is left once escaped backslashes and well-formed pairs
(an emoji, as ASCII-only encoders write it) are taken out. Multipart and form bodies are not JSON and are left
alone. The check runs in the app's one ASGI layer (`_asgi.Edge`, as the body streams in) and in the hot routes'
body reader (`_asgi.Body`), raising to the reader of the body, whose error mapper answers a 400 in the route's shape.
"""

from __future__ import annotations

import json
import re

from ..._errors import InvalidRequestError

_ESCAPES = (b"\\ud", b"\\uD")


_PAIR = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}")


def maybe_lone(body: bytes) -> bool:
    """Whether a surrogate escape may stand alone in `body`: what is left once escaped backslashes (`\\\\`, taken
    left to right as JSON reads them, so `\\\\ud800` is text) are blanked out (not removed: that would join the
    two halves of `\\ud800\\\\\\udc00` into a pair) and high-low pairs are removed."""
    rest = _PAIR.sub(b"", body.replace(b"\\\\", b"__"))
    return any(escape in rest for escape in _ESCAPES)


_maybe_lone = maybe_lone  # its name before it was shared with `_asgi` (tests import it)


def check_text(body: bytes) -> None:
    """Raise `InvalidRequestError` naming the first field (or key) of the JSON `body` holding a lone surrogate.
    A body that is not JSON passes: the route says what is wrong with it."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return
    stack: list[tuple[object, str]] = [(value, "")]
    while stack:  # no recursion: a body nested thousands deep is the depth check's to refuse
        node, path = stack.pop()
        if isinstance(node, str):
            _check(node, path)
        elif isinstance(node, dict):
            items = list(node.items())
            for key, _ in items:
                _check(key, path, key)
            stack.extend((child, f"{path}.{key}" if path else key) for key, child in reversed(items))
        elif isinstance(node, list):
            stack.extend((child, f"{path}[{index}]") for index, child in reversed(list(enumerate(node))))


def _check(text: str, path: str, key: str | None = None) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        where = path or "the request body"
        if key is not None:
            where = f"the key {key.encode('utf-8', 'backslashreplace').decode()!r} of {where}"
        half = text[error.start]
        raise InvalidRequestError(
            f"{where} holds a lone UTF-16 surrogate (\\u{ord(half):04x} at character {error.start}), which is "
            "no character: JSON text must be valid Unicode; send the character as a surrogate pair or leave it out",
            param=path or None,
        ) from None
