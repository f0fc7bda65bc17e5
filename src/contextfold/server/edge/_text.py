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
alone.
"""

from __future__ import annotations

import json
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..._errors import InvalidRequestError

_ESCAPES = (b"\\ud", b"\\uD")
_NOT_JSON = (b"multipart/", b"application/x-www-form-urlencoded")


class RefuseLoneSurrogates:
    """ASGI middleware: the body passes through untouched; at its last chunk, if any chunk may hold a surrogate
    escape, the body is decoded and a lone surrogate raises `InvalidRequestError` to the reader of the body (the
    route's body parsing), which the error mapper answers with a 400 in the route's shape."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        kind = dict(scope.get("headers") or []).get(b"content-type", b"").lower()
        if kind.startswith(_NOT_JSON):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        suspect = False
        done = False

        async def checked() -> Message:
            nonlocal suspect, done
            message = await receive()
            if done or message["type"] != "http.request":
                return message
            chunk: bytes = message.get("body", b"")
            if not suspect:
                # the escape may straddle two chunks: the seam is looked at too
                seam = chunks[-1][-2:] + chunk[:2] if chunks else b""
                suspect = any(e in chunk or e in seam for e in _ESCAPES)
            chunks.append(chunk)
            if not message.get("more_body", False):
                done = True
                if suspect:
                    body = b"".join(chunks)
                    if _maybe_lone(body):
                        check_text(body)
                chunks.clear()
            return message

        await self.app(scope, checked, send)


_PAIR = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}")


def _maybe_lone(body: bytes) -> bool:
    """Whether a surrogate escape may stand alone in `body`: what is left once escaped backslashes (`\\\\`, taken
    left to right as JSON reads them, so `\\\\ud800` is text) are blanked out (not removed: that would join the
    two halves of `\\ud800\\\\\\udc00` into a pair) and high-low pairs are removed."""
    rest = _PAIR.sub(b"", body.replace(b"\\\\", b"__"))
    return any(escape in rest for escape in _ESCAPES)


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
