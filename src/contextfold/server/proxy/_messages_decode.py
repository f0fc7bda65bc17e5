"""Anthropic Messages bodies decoded straight from the request bytes (`decode_messages`), as `_chat_decode` does
for Chat Completions: msgspec decodes the `messages` array into typed structs in C, and anything the structs do not
take is decided by the reference parser (`_messages_parse.parse_messages`) on the same bytes, so results and errors
are the reference's.

The structs take the messages of a conversation without tools: a string content, or text blocks (with their
cache_control markers, which clients such as Claude Code put on the latest ones). A message holding tool_use,
tool_result, thinking, image or document blocks is decoded generically and parsed by the reference parser's own
message parse; any mistake anywhere sends the whole body to the reference parser.
Keys are `canonical_anthropic`'s byte for byte; events are built only when asked for, anew on each build. A
message's parse is kept by its bytes (`_seen`), so only a request's new messages are parsed. Lone surrogates are
checked in the new messages and the other fields, and in the whole body when it falls back (as `_chat_decode`).
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import msgspec

from ..._errors import InvalidRequestError
from ...events import Event, Message, TextPart
from ..responses._schemas import check_depth
from ._chat_decode import check_body, check_field, check_piece, reference_body
from ._messages_blocks import assistant_events, user_events
from ._messages_parse import _message as reference_message
from ._messages_parse import finish_messages, parse_messages
from ._proxy_types import ClientMessage, ProxyRequest
from ._seen import Seen


class _Cache(msgspec.Struct, forbid_unknown_fields=True):
    type: str
    ttl: str | None = None


class _Text(msgspec.Struct, tag_field="type", tag="text", forbid_unknown_fields=True):
    text: str
    cache_control: _Cache | None = None


class _Message(msgspec.Struct, forbid_unknown_fields=True):
    role: Literal["user", "assistant"]
    content: str | list[_Text]


_fields = msgspec.json.Decoder(dict[str, msgspec.Raw])
_raws = msgspec.json.Decoder(list[msgspec.Raw])
_message = msgspec.json.Decoder(_Message)
_Kept = tuple[ClientMessage, tuple[tuple[bool, str], ...]]
"""A message's parse and its tool blocks in order (True: a tool_use and its id, False: a tool_result and its
tool_use_id), what the one cross-message check needs."""
_SEEN: Seen[_Kept] = Seen()
"""Each message's parse by its bytes: a resent history is parsed once (see `_seen`)."""
_generic = msgspec.json.Decoder()


class _Fallback(Exception):
    """The fast path does not decide this body: the reference parser does."""


def decode_messages(data: bytes) -> ProxyRequest:
    """The proxy's reading of a `POST /v1/messages` body, from its bytes (see the module docstring)."""
    try:
        return _fast(data)
    except (_Fallback, msgspec.DecodeError, RecursionError, InvalidRequestError):
        check_body(data)
        return parse_messages(reference_body(data))


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
    last = len(messages) - 1

    def parse(raw: bytes, index: int) -> tuple[_Kept, bool]:
        check_piece(raw)  # a message holding a lone surrogate is never kept (see `_chat_decode`)
        try:
            decoded = _message.decode(raw)
        except msgspec.ValidationError:  # blocks the structs do not take: the reference's own message parse
            return _general(raw, index, index == last), True
        # kept unless empty: only an empty message's parse depends on where it stands (a final prefill)
        return (_client(decoded, index == last), ()), bool(decoded.content)

    kept = _SEEN.each(messages, parse, len(data))  # the raw messages are views of `data`
    _check_call_ids(kept)
    clients = [client for client, _ in kept]
    return finish_messages(rest, tuple(clients))


def _general(raw: bytes, index: int, last: bool) -> _Kept:
    """A message with tool, thinking, image or document blocks, parsed by the reference parser's own message parse
    (`_messages_parse._message`: its checks, its key). Its mistakes raise, and the whole body then goes to the
    reference parser, which names the first mistake as it always does. Its events are built anew on each build
    from the checked blocks (the reference builds them once; a kept message may become events more than once)."""
    value = _generic.decode(raw)
    check_depth({"messages": [value]})  # as deep as it sits in the body
    client = reference_message(value, f"messages[{index}]", last)
    assert isinstance(value, dict)
    content = value["content"]
    if isinstance(content, str):
        return client, ()
    where = f"messages[{index}].content"
    build = partial(user_events if client.role == "user" else assistant_events, content, where)
    tools = tuple(
        (block["type"] == "tool_use", str(block["id"] if block["type"] == "tool_use" else block["tool_use_id"]))
        for block in content
        if block["type"] in ("tool_use", "tool_result")
    )
    return ClientMessage(client.key, build, client.role), tools


def _check_call_ids(kept: list[_Kept]) -> None:
    """`_messages_parse._check_call_ids` over the kept tool blocks: a tool_use id that is still waiting for its
    result is reused. The reference parser then names it (the body falls back)."""
    waiting: set[str] = set()
    for _, tools in kept:
        for is_use, call_id in tools:
            if not is_use:
                waiting.discard(call_id)
            elif call_id in waiting:
                raise _Fallback
            else:
                waiting.add(call_id)


def _client(message: _Message, last: bool) -> ClientMessage:
    role, content = message.role, message.content
    if not content and not (last and role == "assistant"):
        raise _Fallback  # the reference names the empty content
    if isinstance(content, str):
        texts = [content] if content else []
        reduced = [["t", content]] if content.strip() else []
    else:
        texts = [block.text for block in content]
        reduced = [["t", text] for text in texts if text.strip()]
    return ClientMessage(msgspec.json.encode([role, reduced]), partial(_events, role, texts), role)


def _events(role: Literal["user", "assistant"], texts: list[str]) -> tuple[Event, ...]:
    return (Message(role=role, content=[TextPart(text) for text in texts]),) if texts else ()
