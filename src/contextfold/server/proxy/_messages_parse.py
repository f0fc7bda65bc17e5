"""Anthropic Messages requests (`POST /v1/messages`) parsed into the proxy's `ProxyRequest`, and the canonical key
of a message (`canonical_anthropic`). Content blocks are parsed in `_messages_blocks`; `_messages_wire` is the
wire's face (it re-exports these) and its answer side.

The body is JSON that nothing has validated yet (no pydantic: bodies reach ~1 MB and the parse stays one linear
pass), so every field is checked by hand: a mistake raises `InvalidRequestError` whose `param` is the exact path
(`messages[2].content[1].input`) and whose message says what was found and what is accepted.

- `model`, `max_tokens` (required, positive: the Messages API requires it), `messages` (non-empty; roles user and
  assistant; empty content only on a final assistant message, a prefill, which becomes no events), `system` (a
  string, or text blocks joined by a blank line), `tools` (custom tools only), `tool_choice` (auto/any/none; a named
  tool is passed on in `extra` and asks for `required`), `temperature` and `top_p` (0..1), `stream`.
- Every other parameter (stop_sequences, top_k, metadata, thinking, service_tier, unknown keys) goes to `extra`,
  passed on only to an Anthropic upstream.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from ..._errors import InvalidRequestError
from ...events import Event, Message, TextPart, ToolSpec
from ...models import ModelSettings
from ..edge._items_fields import _kind, optional_string_at, shown, string_at, wrong
from ._messages_blocks import Body, assistant_events, object_at, user_events
from ._proxy_types import ClientMessage, ProxyRequest

_CONSUMED = frozenset(
    {"model", "max_tokens", "messages", "system", "tools", "tool_choice", "temperature", "top_p", "stream"}
)
"""Parameters parsed into the `ProxyRequest`'s own fields; every other one goes to `extra`."""

_ROLES: dict[str, Literal["user", "assistant"]] = {"user": "user", "assistant": "assistant"}
_TOOL_CHOICES = "auto, any, tool or none"
_ToolChoice = Literal["auto", "none", "required"]


# --- the request --------------------------------------------------------------------------------------------------


def parse_messages(body: object) -> ProxyRequest:
    """The `ProxyRequest` (wire "anthropic") for a decoded `POST /v1/messages` body.

    Raises `InvalidRequestError` (its `param` the path of the bad field) for anything malformed or unsupported.
    `tools: []` is the same as no tools (None).
    """
    if not isinstance(body, dict):
        raise InvalidRequestError(f"the request body must be a JSON object, not {_kind(body)}")
    string_at(body, "model", "", non_empty=True)
    _max_tokens(body.get("max_tokens"))
    return finish_messages(body, _messages(body.get("messages")))


def finish_messages(body: Body, messages: tuple[ClientMessage, ...]) -> ProxyRequest:
    """The request from its validated messages and the body's other fields (`body`'s `messages` is not read:
    `_messages_decode` hands in the body without it)."""
    model = string_at(body, "model", "", non_empty=True)
    max_tokens = _max_tokens(body.get("max_tokens"))
    system = _system(body.get("system"))
    tools = _tools(body.get("tools"))
    choice, parallel, named = _tool_choice(body.get("tool_choice"), tools)
    settings = ModelSettings(
        temperature=_unit(body, "temperature"),
        top_p=_unit(body, "top_p"),
        tool_choice=choice,
        parallel_tool_calls=parallel,
    )
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequestError(f"stream must be true or false, not {_kind(stream)}", "stream")
    extra = {key: value for key, value in body.items() if key not in _CONSUMED}
    if named is not None:
        extra["tool_choice"] = named
    return ProxyRequest(
        wire="anthropic",
        model=model,
        system_prompt=system,
        messages=messages,
        tools=tools,
        settings=settings,
        max_output_tokens=max_tokens,
        stream=bool(stream),
        extra=extra,
    )


def _max_tokens(value: object) -> int:
    if value is None:
        raise InvalidRequestError(
            "max_tokens is missing; the Messages API requires it: the most tokens the answer may have (e.g. 1024)",
            "max_tokens",
        )
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequestError(f"max_tokens must be a positive integer, not {_kind(value)}", "max_tokens")
    if value < 1:
        raise InvalidRequestError(f"max_tokens is {value}; it must be a positive integer (e.g. 1024)", "max_tokens")
    return value


def _unit(body: Body, key: str) -> float | None:
    """An optional number between 0 and 1 (temperature, top_p)."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequestError(f"{key} must be a number between 0 and 1, not {_kind(value)}", key)
    if not 0 <= value <= 1:  # also refuses NaN
        raise InvalidRequestError(f"{key} is {value}; it must be between 0 and 1", key)
    return float(value)


def _system(value: object) -> str | None:
    """`system`: a string, or text blocks joined by a blank line (their cache_control markers are dropped)."""
    if value is None or isinstance(value, str):
        return value or None
    if not isinstance(value, list):
        raise wrong("system", "a string or an array of text blocks", value)
    texts: list[str] = []
    for index, raw in enumerate(value):
        path = f"system[{index}]"
        block = object_at(raw, path)
        if block.get("type") != "text":
            raise InvalidRequestError(
                f"{path}.type is {shown(block.get('type'))}; system blocks must be text blocks", f"{path}.type"
            )
        texts.append(string_at(block, "text", path))
    return "\n\n".join(texts) or None


def _tools(value: object) -> tuple[ToolSpec, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise wrong("tools", "an array of tools", value)
    specs: list[ToolSpec] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(value):
        path = f"tools[{index}]"
        tool = object_at(raw, path)
        kind = tool.get("type")
        if kind is not None and kind != "custom":
            raise InvalidRequestError(
                f"{path}.type is {shown(kind)}: a server tool, which the proxy does not run; "
                "send only custom tools (name, description, input_schema)",
                f"{path}.type",
            )
        name = string_at(tool, "name", path, non_empty=True)
        if name in seen:
            raise InvalidRequestError(
                f"{path}.name {name!r} is also the name of tools[{seen[name]}]; tool names must be unique",
                f"{path}.name",
            )
        seen[name] = index
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            raise wrong(f"{path}.input_schema", 'a JSON schema object (e.g. {"type": "object"})', schema)
        description = optional_string_at(tool, "description", path) or ""
        specs.append(ToolSpec(name=name, description=description, parameters=schema))
    return tuple(specs) or None


def _tool_choice(
    value: object, tools: tuple[ToolSpec, ...] | None
) -> tuple[_ToolChoice | None, bool | None, dict[str, object] | None]:
    """(tool_choice, parallel_tool_calls, the named choice for `extra`) for `tool_choice`."""
    if value is None:
        return None, None, None
    choice = object_at(value, "tool_choice")
    disable = choice.get("disable_parallel_tool_use")
    if disable is not None and not isinstance(disable, bool):
        raise InvalidRequestError(
            f"tool_choice.disable_parallel_tool_use must be true or false, not {_kind(disable)}",
            "tool_choice.disable_parallel_tool_use",
        )
    parallel = False if disable else None
    kind = choice.get("type")
    if kind == "auto":
        return "auto", parallel, None
    if kind == "any":
        return "required", parallel, None
    if kind == "none":
        return "none", None, None
    if kind == "tool":
        name = string_at(choice, "name", "tool_choice", non_empty=True)
        if name not in {tool.name for tool in tools or ()}:
            raise InvalidRequestError(
                f"tool_choice.name {name!r} is not one of the request's tools; name a tool from tools",
                "tool_choice.name",
            )
        return "required", parallel, dict(choice)
    raise InvalidRequestError(f"tool_choice.type is {shown(kind)}; expected one of {_TOOL_CHOICES}", "tool_choice.type")


# --- messages -----------------------------------------------------------------------------------------------------


def _messages(value: object) -> tuple[ClientMessage, ...]:
    if not isinstance(value, list):
        raise wrong("messages", "a non-empty array of messages", value)
    if not value:
        raise InvalidRequestError("messages is empty; send at least one user message", "messages")
    last = len(value) - 1
    parsed = tuple(_message(raw, f"messages[{index}]", index == last) for index, raw in enumerate(value))
    _check_call_ids(value)
    return parsed


def _check_call_ids(messages: list[object]) -> None:
    """Refuse a tool_use whose id is the id of an earlier tool_use that has no tool_result yet (in the same message
    or an earlier one): results name their call by id, so one of the two could never be answered. An id reused
    after its call was answered is left to the conversation, which refuses it while the earlier call is in view.
    Runs on messages already parsed, so every block is an object of a known type."""
    waiting: dict[str, str] = {}  # tool_use id -> the path of the tool_use that has no result yet
    for index, message in enumerate(messages):
        assert isinstance(message, dict)
        content = message.get("content")
        for number, block in enumerate(content if isinstance(content, list) else ()):
            path = f"messages[{index}].content[{number}]"
            if block.get("type") == "tool_result":
                waiting.pop(str(block.get("tool_use_id")), None)
            elif block.get("type") == "tool_use":
                call_id = str(block.get("id"))
                if call_id in waiting:
                    raise InvalidRequestError(
                        f"{path}.id {call_id!r} is also the id of the tool_use {waiting[call_id]}, which has no "
                        "tool_result yet; give every tool_use its own id",
                        f"{path}.id",
                    )
                waiting[call_id] = path


def _message(raw: object, path: str, last: bool) -> ClientMessage:
    message = object_at(raw, path)
    given = message.get("role")
    role = _ROLES.get(given) if isinstance(given, str) else None
    if role is None:
        hint = "; put instructions in the top-level system parameter" if given in ("system", "developer") else ""
        raise InvalidRequestError(f"{path}.role is {shown(given)}; expected user or assistant{hint}", f"{path}.role")
    where = f"{path}.content"
    content = message.get("content")
    if not isinstance(content, (str, list)):
        raise wrong(where, "a string or an array of content blocks", content)
    if not content and not (last and role == "assistant"):
        raise InvalidRequestError(
            f"{where} is empty; every message needs content except a final assistant message (a prefill)", where
        )
    events: tuple[Event, ...]
    if isinstance(content, str):
        events = (Message(role=role, content=[TextPart(content)]),) if content else ()
    elif role == "user":
        events = user_events(content, where)
    else:
        events = assistant_events(content, where)
    # built now, not deferred: building the blocks' events is what validates them
    return ClientMessage(key=canonical_anthropic(message), build=lambda: events, role=role)


# --- the canonical key --------------------------------------------------------------------------------------------


def canonical_anthropic(message: Mapping[str, Any]) -> bytes:
    """The canonical bytes of a (valid) Messages API message: equal however a client spells the same message.

    The role, then each block reduced to what the model reads: text; tool_use (id, name, input as sorted compact
    JSON); tool_result (tool_use_id, is_error, its texts joined by newlines, its images); image and document
    sources. A string content equals one text block holding it; blocks with no visible text (empty or whitespace
    only: the API refuses them and the renderer drops them) are left out; adjacent text blocks are not merged
    (clients echo blocks as they were given). Ignored: thinking and redacted_thinking blocks (signatures vary),
    cache_control, citations and any other key.
    """
    content = message.get("content")
    if isinstance(content, str):
        blocks: list[object] = [["t", content]] if content.strip() else []
    else:
        blocks = [reduced for block in content or () if (reduced := _reduce(block)) is not None]
    return msgspec.json.encode([message.get("role"), blocks], order="sorted")


def _reduce(block: Mapping[str, Any]) -> object | None:
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        return ["t", text] if isinstance(text, str) and text.strip() else None
    if kind == "tool_use":
        return ["u", block.get("id"), block.get("name"), block.get("input")]
    if kind == "tool_result":
        content = block.get("content")
        if isinstance(content, str) or content is None:
            text, images = content or "", []
        else:
            text = "\n".join(str(part.get("text")) for part in content if part.get("type") == "text")
            images = [_reduce_source(part.get("source")) for part in content if part.get("type") == "image"]
        return ["r", block.get("tool_use_id"), block.get("is_error") is True, text, images]
    if kind == "image":
        return ["i", _reduce_source(block.get("source"))]
    if kind == "document":
        return ["d", _reduce_source(block.get("source"))]
    if kind in ("thinking", "redacted_thinking"):
        return None
    return [kind]


def _reduce_source(source: object) -> object:
    if not isinstance(source, Mapping):
        return None
    kind = source.get("type")
    if kind == "base64":
        return [kind, source.get("media_type"), source.get("data")]
    if kind == "url":
        return [kind, source.get("url")]
    if kind == "file":
        return [kind, source.get("file_id")]
    if kind == "text":
        return [kind, source.get("data")]
    return source
