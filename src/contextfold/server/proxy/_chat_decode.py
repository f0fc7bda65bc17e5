"""Chat Completions bodies decoded straight from the request bytes: the proxy's hot path (`decode_chat`).

A client that keeps its own history resends all of it on every request, so at a 400 KB history the reference
parser (`_chat_parse.parse_chat`, over a generic JSON decode and the depth walk of `_schemas.check_depth`) spent most
of a proxied request checking dicts in Python, message by message. Here the `messages` array is decoded by msgspec
into typed structs (a tagged union on `role`, content parts tagged on `type`), in C, straight from the bytes; only
the small remaining fields are decoded generically and depth-checked.

The structs accept a strict subset of what the reference parser accepts: the shapes real clients send (the known
fields, with their usual types). Anything else (an unknown field, a value of another type, a value the parser would
refuse: an empty id, a bad image URL, a role it refuses) falls back to the reference parser on the same bytes, which
accepts it or raises its own error with its exact `param`. So a body decodes here exactly as the reference parser
decodes it, and every error is the reference parser's: tests/test_chat_decode.py checks both with generated bodies.

The depth limit holds without a walk: every struct field has a bounded shape (strings, small objects), so typed
messages cannot nest past `MAX_JSON_DEPTH`; the other fields are walked (they are small), and a body msgspec cannot
decode at all (not JSON, nested thousands deep) goes to the reference path, which names the error.

Each message's key and events come from the same `ParsedMessage` as in the reference parser, so keys are the
reference keys byte for byte (anchors recorded before stay valid) and events are built only when asked for: only
the messages after the matched prefix ever become events. A message's parse is kept by its bytes (`_seen`), so a
resent history is split and hashed in C and only its new messages are parsed.

The proxy routes' body reader leaves the lone-surrogate check (`edge._text`) to the decoders, so that a resent
history is not scanned again on every request: each new message and each other field is checked here
(`check_piece`: a message holding a lone surrogate is never kept, so a kept one needs no check), and a body that
falls back to the reference parser is checked whole first (`check_body`, what the edge does for every other route),
which names the first lone surrogate of the body as the edge always named it.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Literal

import msgspec

from ..._errors import InvalidRequestError
from ...events import Part, TextPart
from ..edge._text import check_text, maybe_lone
from ..responses._schemas import check_depth, too_deep
from ._chat_parse import Call, ParsedMessage, _file, _image, finish_chat, parse_chat
from ._proxy_types import ClientMessage, ProxyRequest
from ._seen import Seen


class _Cache(msgspec.Struct, forbid_unknown_fields=True):
    type: str
    ttl: str | None = None


class _Text(msgspec.Struct, tag_field="type", tag="text", forbid_unknown_fields=True):
    text: str
    cache_control: _Cache | None = None


class _Refusal(msgspec.Struct, tag_field="type", tag="refusal", forbid_unknown_fields=True):
    refusal: str


class _ImageUrl(msgspec.Struct, forbid_unknown_fields=True):
    url: str
    detail: str | None = None


class _Image(msgspec.Struct, tag_field="type", tag="image_url", forbid_unknown_fields=True):
    image_url: _ImageUrl
    cache_control: _Cache | None = None


class _FileRef(msgspec.Struct, forbid_unknown_fields=True):
    file_id: str | None = None
    file_data: str | None = None
    filename: str | None = None


class _File(msgspec.Struct, tag_field="type", tag="file", forbid_unknown_fields=True):
    file: _FileRef
    cache_control: _Cache | None = None


class _Function(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    arguments: str


class _Call(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    function: _Function
    type: Literal["function"] = "function"


_Annotation = dict[str, str | int | dict[str, str | int | None] | None]


class _User(msgspec.Struct, tag_field="role", tag="user", forbid_unknown_fields=True):
    content: str | list[_Text | _Image | _File] | None = None
    name: str | None = None


class _System(msgspec.Struct, tag_field="role", tag="system", forbid_unknown_fields=True):
    content: str | list[_Text] | None = None
    name: str | None = None


class _Developer(msgspec.Struct, tag_field="role", tag="developer", forbid_unknown_fields=True):
    content: str | list[_Text] | None = None
    name: str | None = None


class _Assistant(msgspec.Struct, tag_field="role", tag="assistant", forbid_unknown_fields=True):
    content: str | list[_Text | _Refusal] | None = None
    tool_calls: list[_Call] | None = None
    name: str | None = None
    refusal: str | None = None
    reasoning_content: str | None = None
    annotations: list[_Annotation] | None = None
    audio: None = None
    function_call: None = None  # any other value: the reference parser refuses it by name


class _Tool(msgspec.Struct, tag_field="role", tag="tool", forbid_unknown_fields=True):
    tool_call_id: str
    content: str | list[_Text]
    name: str | None = None


_Message = _User | _System | _Developer | _Assistant | _Tool

_ROLE: dict[type[_Message], str] = {
    _User: "user",
    _System: "system",
    _Developer: "developer",
    _Assistant: "assistant",
    _Tool: "tool",
}
_encode = msgspec.json.encode
_fields = msgspec.json.Decoder(dict[str, msgspec.Raw])
_raws = msgspec.json.Decoder(list[msgspec.Raw])
_message = msgspec.json.Decoder(_Message)
_SEEN: Seen[tuple[ParsedMessage, ClientMessage]] = Seen()
"""Each message's parse by its bytes: a resent history is parsed once (see `_seen`)."""
_generic = msgspec.json.Decoder()
_first, _second = itemgetter(0), itemgetter(1)


class _Fallback(Exception):
    """The fast path does not decide this body: the reference parser does."""


def decode_chat(data: bytes) -> ProxyRequest:
    """The proxy's reading of a Chat Completions request body, from its bytes (see the module docstring)."""
    try:
        return _fast(data)
    except (_Fallback, msgspec.DecodeError, RecursionError, InvalidRequestError):
        check_body(data)
        return parse_chat(reference_body(data))


_ESCAPES = (b"\\ud", b"\\uD")


def check_body(data: bytes) -> None:
    """The edge's lone-surrogate check of a whole body (`edge._text`): an `InvalidRequestError` naming the first
    field holding one. Only the escape can spell a surrogate; most bodies have none and cost two scans in C."""
    if (_ESCAPES[0] in data or _ESCAPES[1] in data) and maybe_lone(data):
        check_text(data)


def check_piece(raw: bytes) -> None:
    """`check_body` of one complete JSON value of a body (a message, a field): it raises when the value holds a
    lone surrogate, and the decoder's fallback then checks the whole body, which names it by its path there."""
    if (_ESCAPES[0] in raw or _ESCAPES[1] in raw) and maybe_lone(raw):
        check_text(raw)


def reference_body(data: bytes) -> object:
    """The body decoded generically and depth-checked, as the reference parser reads it."""
    try:
        body = _generic.decode(data)
    except msgspec.DecodeError as error:
        raise InvalidRequestError(f"the request body is not valid JSON: {error}") from None
    except RecursionError:  # nested thousands deep: the decoder gave up
        raise too_deep() from None
    check_depth(body)
    return body


def _fast(data: bytes) -> ProxyRequest:
    fields = _fields.decode(data)
    raw = fields.pop("messages", None)
    if raw is None:
        raise _Fallback
    messages = _raws.decode(raw)
    if not messages:
        raise _Fallback
    rest = {key: _generic.decode(check_field(value)) for key, value in fields.items()}
    check_depth(rest)
    model = rest.get("model")
    if not isinstance(model, str) or not model:
        raise _Fallback
    seen = _SEEN.each(messages, _parse, len(data))  # the raw messages are views of `data`
    parsed, clients = list(map(_first, seen)), list(map(_second, seen))  # in C: these run over every message
    return finish_chat(rest, model, parsed, clients)


def check_field(value: msgspec.Raw) -> bytes:
    """A field's bytes, checked for lone surrogates (`check_piece`; its key is decoded by msgspec, which refuses
    one: the body then falls back and is checked whole)."""
    raw = bytes(value)
    check_piece(raw)
    return raw


def _parse(raw: bytes, index: int) -> tuple[tuple[ParsedMessage, ClientMessage], bool]:
    """A message new to this process, checked, parsed and kept (one the structs do not take raises: the body falls
    back)."""
    check_piece(raw)
    one = _parsed(_message.decode(raw))
    return (one, ClientMessage(one.key(), one.events, one.role)), True


def _parsed(message: _Message) -> ParsedMessage:
    content = message.content
    if isinstance(content, str) and not (isinstance(message, _Assistant) and message.tool_calls):
        # the common message, keyed here as `ParsedMessage.key` would key it, without building the key's parts
        role, call_id = _ROLE[type(message)], message.tool_call_id if isinstance(message, _Tool) else None
        if call_id == "":
            raise _Fallback
        parts = (TextPart(content),) if content else ()
        return ParsedMessage(role, parts, (), call_id, _encode([role, [content] if content else [], [], call_id]))
    if isinstance(message, _User):
        return ParsedMessage("user", _content(message.content))
    if isinstance(message, _Assistant):
        calls = tuple(_call(call) for call in message.tool_calls or ())
        return ParsedMessage("assistant", _content(message.content), calls)
    if isinstance(message, _Tool):
        if not message.tool_call_id:
            raise _Fallback
        return ParsedMessage("tool", _content(message.content), (), message.tool_call_id)
    return ParsedMessage("system" if isinstance(message, _System) else "developer", _content(message.content))


def _content(
    content: str | list[_Text | _Image | _File] | list[_Text | _Refusal] | list[_Text] | None,
) -> tuple[Part, ...]:
    if isinstance(content, str):
        return (TextPart(content),) if content else ()
    if content is None:
        return ()
    parts: list[Part] = []
    for part in content:
        if isinstance(part, _Text):
            if part.text:
                parts.append(TextPart(part.text))
        elif isinstance(part, _Refusal):
            if part.refusal:
                parts.append(TextPart(part.refusal))
        elif isinstance(part, _Image):
            image = part.image_url  # the reference checks the URL and detail: a mistake falls back to it
            parts.append(_image({"image_url": {"url": image.url, "detail": image.detail}}, ""))
        else:
            file = part.file
            fields = {"file_id": file.file_id, "file_data": file.file_data, "filename": file.filename}
            parts.append(_file({"file": fields}, ""))
    return tuple(parts)


def _call(call: _Call) -> Call:
    if not call.id or not call.function.name:
        raise _Fallback
    return call.id, call.function.name, call.function.arguments
