"""OpenAI Chat Completions requests (`POST /v1/chat/completions`) parsed into the proxy's `ProxyRequest`.

The body arrives JSON-decoded but unvalidated, on every request, and may hold ~1 MB of history, so it is checked by
hand in one pass (no pydantic): a mistake raises `InvalidRequestError` whose `param` is the exact path
(`messages[4].tool_calls[0].function.arguments`) and whose message says how to fix it.

- Leading system/developer messages become `system_prompt` (texts joined by a blank line); later ones are
  `ClientMessage`s holding a `Message` of that role.
- user: a string or `text` / `image_url` / `file` parts (`input_audio` is refused: nothing downstream holds audio).
- assistant: text (a string, `text` and `refusal` parts, or null), then its `tool_calls` as `ToolCall`s of one new
  batch. `reasoning_content` (vLLM, DeepSeek), `name`, `audio`, `annotations` are ignored; legacy `function_call`
  is refused.
- tool: `ToolResult(tool_call_id, content)`; a list of text parts is joined with newlines. Legacy role `function`
  is refused.
- A message with no text or parts (and no calls) becomes no events: the renderers would drop it anyway.
- `tools`, `tool_choice`, `temperature`, `top_p`, `parallel_tool_calls`, `max_completion_tokens`/`max_tokens`,
  `stream`, `stream_options.include_usage` and `n` (only 1) are mapped; every other key is kept in `extra`, verbatim,
  for an upstream that speaks the same wire.

`canonical_chat` reduces one message to its key: the role, the content as the parser reads it (text per part, empty
parts dropped; images by URL, not `detail`; files as the chat renderer writes them back), the tool calls as (id,
name, arguments re-encoded compactly with sorted keys when they are JSON) and the tool call id. A message rendered
back from its events (`view._render.render_openai_chat`) has the same key as the message the client sent.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from ..._errors import InvalidRequestError
from ...events import Event, FilePart, ImagePart, Message, Part, Role, TextPart, ToolCall, ToolResult, ToolSpec, new_id
from ...models import ModelSettings
from ..edge._items_fields import Item, _kind, _object, optional_string_at, shown, string_at, wrong
from ..responses._items_input import _DETAILS, _IMAGE_URL_SCHEMES
from ._proxy_types import ClientMessage, ProxyRequest

_MAPPED = frozenset(
    [
        "model",
        "messages",
        "tools",
        "tool_choice",
        "temperature",
        "top_p",
        "parallel_tool_calls",
        "max_completion_tokens",
        "max_tokens",
        "stream",
        "stream_options",
        "n",
    ]
)
"""Body keys read into the request's own fields; every other key goes to `extra`."""

_ROLES = "system, developer, user, assistant or tool"
_ROLE_OF: dict[str, Role] = {"system": "system", "developer": "developer", "user": "user", "assistant": "assistant"}
_PARTS: dict[str, tuple[str, ...]] = {
    "user": ("text", "image_url", "file"),
    "assistant": ("text", "refusal"),
    "tool": ("text",),
    "system": ("text",),
    "developer": ("text",),
}
"""The content part types each role may send."""
_TOOL_CHOICES: dict[str, Literal["auto", "none", "required"]] = {"auto": "auto", "none": "none", "required": "required"}

Call = tuple[str, str, str]
"""A tool call as the key sees it: (id, name, arguments)."""


class ParsedMessage(msgspec.Struct, frozen=True):
    """One message, validated: what both its events and its key are made from."""

    role: str
    parts: tuple[Part, ...]
    calls: tuple[Call, ...] = ()
    tool_call_id: str | None = None
    known_key: bytes | None = None
    """The key, when the decoder had it at hand (`_chat_decode`: a string content and no calls)."""

    def key(self) -> bytes:
        if self.known_key is not None:
            return self.known_key
        if self.tool_call_id is not None:  # a tool result is one string, however the client split it
            output = _output(self.parts)
            content: list[object] = [output] if output else []
        else:
            content = [_part_key(part) for part in self.parts]
        calls = [[call_id, name, _arguments_key(arguments)] for call_id, name, arguments in self.calls]
        return msgspec.json.encode([self.role, content, calls, self.tool_call_id])

    def events(self) -> tuple[Event, ...]:
        if self.tool_call_id is not None:
            return (ToolResult(call_id=self.tool_call_id, output=_output(self.parts)),)
        out: list[Event] = []
        if self.parts:
            out.append(Message(role=_ROLE_OF[self.role], content=list(self.parts)))
        if self.calls:
            batch = new_id("batch")
            out.extend(ToolCall(call_id=i, name=n, arguments=a, batch_id=batch) for i, n, a in self.calls)
        return tuple(out)


def parse_chat(body: object) -> ProxyRequest:
    """The proxy's reading of a Chat Completions request body (already JSON-decoded, of any shape)."""
    if not isinstance(body, dict):
        raise InvalidRequestError(f"the request body must be a JSON object, not {_kind(body)}")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise wrong("model", "the name of a model (a non-empty string)", None if model == "" else model)
    raw = body.get("messages")
    if not isinstance(raw, list):
        raise wrong("messages", "an array of messages", raw)
    if not raw:
        raise InvalidRequestError("messages is an empty array; send at least one message", "messages")
    parsed = [_message(item, f"messages[{index}]") for index, item in enumerate(raw)]
    return finish_chat(body, model, parsed)


def finish_chat(
    body: Item, model: str, parsed: list[ParsedMessage], clients: list[ClientMessage] | None = None
) -> ProxyRequest:
    """The request from its validated messages and the body's other fields (`body`'s `messages` is not read:
    `_chat_decode` hands in the body without it, and `clients`, the messages as the request holds them, when it
    kept them from an earlier request)."""
    _check_call_ids(parsed)
    lead = 0
    while lead < len(parsed) and parsed[lead].role in ("system", "developer"):
        lead += 1
    instructions = [p.text for message in parsed[:lead] for p in message.parts if isinstance(p, TextPart)]
    tools = _tools(body.get("tools"))
    extra = {key: value for key, value in body.items() if key not in _MAPPED}
    tool_choice = _tool_choice(body.get("tool_choice"), tools, extra)
    stream = _optional_bool(body, "stream", "")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequestError(f"stream_options must be an object, not {_kind(options)}", "stream_options")
    n = body.get("n")
    if n is not None and n != 1:
        raise InvalidRequestError(
            f"n is {n!r}; only n=1 is supported: one conversation has one continuation. Send separate requests",
            "n",
        )
    return ProxyRequest(
        wire="openai-chat",
        model=model,
        system_prompt="\n\n".join(instructions) or None,
        messages=(
            tuple(clients[lead:])
            if clients is not None
            else tuple(ClientMessage(m.key(), m.events, m.role) for m in parsed[lead:])
        ),
        tools=tools,
        settings=ModelSettings(
            temperature=_number(body, "temperature", low=0.0, high=2.0, low_open=False),
            top_p=_number(body, "top_p", low=0.0, high=1.0, low_open=True),
            tool_choice=tool_choice,
            parallel_tool_calls=_optional_bool(body, "parallel_tool_calls", ""),
        ),
        max_output_tokens=_max_tokens(body),
        stream=bool(stream),
        include_usage=bool(options and _optional_bool(options, "include_usage", "stream_options")),
        extra=extra,
    )


def canonical_chat(message: Mapping[str, Any]) -> bytes:
    """The canonical key of one chat message (see the module docstring). Raises `InvalidRequestError` for a
    message the parser would refuse."""
    return _message(dict(message), "message").key()


# --- messages -------------------------------------------------------------------------------------------------


def _message(raw: object, path: str) -> ParsedMessage:
    item = _object(raw, path)
    role = item.get("role")
    if role == "user":
        return ParsedMessage("user", _content(item, path, "user"))
    if role == "assistant":
        return _assistant(item, path)
    if role == "tool":
        return ParsedMessage("tool", _content(item, path, "tool", required=True), (), _tool_call_id(item, path))
    if role in ("system", "developer"):
        return ParsedMessage(role, _content(item, path, role))
    if role == "function":
        raise InvalidRequestError(
            f"{path}.role 'function' (legacy function calling) is not supported; send the result as a role 'tool' "
            "message with the tool_call_id of the assistant's tool call",
            f"{path}.role",
        )
    raise InvalidRequestError(f"{path}.role is {shown(role)}; expected one of {_ROLES}", f"{path}.role")


def _content(item: Item, path: str, role: str, *, required: bool = False) -> tuple[Part, ...]:
    """The message's parts, empty text dropped (`required`: null content is a mistake, not an empty message)."""
    content = item.get("content")
    where = f"{path}.content"
    if isinstance(content, str):
        return (TextPart(content),) if content else ()
    if content is None and not required:
        return ()
    if not isinstance(content, list):
        raise wrong(where, "a string or an array of content parts", content)
    parts = (_part(raw, f"{where}[{index}]", role) for index, raw in enumerate(content))
    return tuple(p for p in parts if not isinstance(p, TextPart) or p.text)


def _part(raw: object, path: str, role: str) -> Part:
    part = _object(raw, path)
    kind = part.get("type")
    allowed = _PARTS[role]
    if kind == "text":
        return TextPart(string_at(part, "text", path))
    if kind not in allowed or not isinstance(kind, str):
        if kind == "input_audio":
            hint = "audio is not supported by this proxy; send a transcript as a text part"
        else:
            hint = f"the content parts of a {role} message may be of type {' or '.join(allowed)}"
        raise InvalidRequestError(f"{path}.type is {shown(kind)}; {hint}", f"{path}.type")
    if kind == "refusal":
        return TextPart(string_at(part, "refusal", path))
    return _image(part, path) if kind == "image_url" else _file(part, path)


def _sub(item: Item, key: str, where: str, expected: str) -> Item:
    """A required object field (`where` is its path)."""
    value = item.get(key)
    if not isinstance(value, dict):
        raise wrong(where, expected, value)
    return value


def _image(part: Item, path: str) -> ImagePart:
    where = f"{path}.image_url"
    image = _sub(part, "image_url", where, "an object with a url")
    url = string_at(image, "url", where)
    if not url.startswith(_IMAGE_URL_SCHEMES):
        raise InvalidRequestError(
            f"{where}.url must be an http(s) URL or a base64 data URL (data:image/png;base64,...)", f"{where}.url"
        )
    detail = image.get("detail")
    if detail is None:
        return ImagePart(url)
    if not isinstance(detail, str) or detail not in _DETAILS:
        raise InvalidRequestError(
            f"{where}.detail is {shown(detail)}; expected one of auto, low, high or original", f"{where}.detail"
        )
    return ImagePart(url, detail=_DETAILS[detail])


def _file(part: Item, path: str) -> FilePart:
    where = f"{path}.file"
    file = _sub(part, "file", where, "an object with a file_id or file_data")
    file_id = optional_string_at(file, "file_id", where)
    data = optional_string_at(file, "file_data", where)
    filename = optional_string_at(file, "filename", where) or None
    guessed = (mimetypes.guess_type(filename)[0] if filename else None) or "application/octet-stream"
    if file_id:
        return FilePart(media_type=guessed, file_id=file_id, filename=filename)
    if data:
        if data.startswith("data:") and ";base64," in data:
            header, encoded = data[5:].split(";base64,", 1)
            return FilePart(media_type=header or guessed, data=encoded, filename=filename)
        return FilePart(media_type=guessed, data=data, filename=filename)
    raise InvalidRequestError(
        f"{where}.file_data is missing; a file part needs a file_id or file_data (a base64 data URL)",
        f"{where}.file_data",
    )


def _assistant(item: Item, path: str) -> ParsedMessage:
    if item.get("function_call") is not None:
        raise InvalidRequestError(
            f"{path}.function_call (legacy function calling) is not supported; send the call in tool_calls",
            f"{path}.function_call",
        )
    parts = _content(item, path, "assistant")
    raw = item.get("tool_calls")
    if raw is None:
        return ParsedMessage("assistant", parts)
    if not isinstance(raw, list):
        raise InvalidRequestError(
            f"{path}.tool_calls must be an array of tool calls or null, not {_kind(raw)}", f"{path}.tool_calls"
        )
    return ParsedMessage("assistant", parts, tuple(_tool_call(c, f"{path}.tool_calls[{i}]") for i, c in enumerate(raw)))


def _tool_call(raw: object, path: str) -> Call:
    call = _object(raw, path)
    kind = call.get("type", "function")
    if kind != "function":
        raise InvalidRequestError(
            f"{path}.type is {shown(kind)}; only function tool calls are supported", f"{path}.type"
        )
    call_id = string_at(call, "id", path, non_empty=True)
    where = f"{path}.function"
    function = _sub(call, "function", where, "an object with name and arguments")
    name = string_at(function, "name", where, non_empty=True)
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        raise InvalidRequestError(
            f"{where}.arguments must be a string holding the arguments as JSON text (for example '{{\"a\": 1}}'), "
            f"not {'missing' if arguments is None else _kind(arguments)}",
            f"{where}.arguments",
        )
    return call_id, name, arguments


def _check_call_ids(parsed: list[ParsedMessage]) -> None:
    """Refuse a tool call whose id is the id of an earlier call that has no result yet (in the same message or an
    earlier one): the tool messages name their call by id, so one of the two could never be answered. An id reused
    after its call was answered is left to the conversation, which refuses it while the earlier call is in view."""
    waiting: dict[str, str] = {}  # call id -> the path of the call that has no result yet
    for index, message in enumerate(parsed):
        if message.tool_call_id is not None:
            waiting.pop(message.tool_call_id, None)
        if not message.calls:  # most messages: no enumerate made for them (this runs over every message)
            continue
        for number, (call_id, _, _) in enumerate(message.calls):
            path = f"messages[{index}].tool_calls[{number}].id"
            if call_id in waiting:
                raise InvalidRequestError(
                    f"{path} {call_id!r} is also the id of {waiting[call_id].removesuffix('.id')}, which has no "
                    "result yet; give every tool call its own id",
                    path,
                )
            waiting[call_id] = path


def _tool_call_id(item: Item, path: str) -> str:
    return string_at(item, "tool_call_id", path, non_empty=True)


def _output(parts: tuple[Part, ...]) -> str:
    return "\n".join(p.text for p in parts if isinstance(p, TextPart))


# --- keys -----------------------------------------------------------------------------------------------------


def _part_key(part: Part) -> object:
    """A part as the chat renderer writes it back (`_chat_part`), reduced to what it says."""
    if isinstance(part, TextPart):
        return part.text
    if isinstance(part, ImagePart):  # detail is how closely to look, not what the image is
        return ["image_url", part.url]
    if part.media_type.startswith("image/") and part.data is not None:
        return ["image_url", f"data:{part.media_type};base64,{part.data}"]
    if part.file_id is not None:  # the renderer sends a file id alone
        return ["file", part.file_id]
    return ["file", f"data:{part.media_type};base64,{part.data or ''}", part.filename]


def _arguments_key(arguments: str) -> str:
    """JSON arguments re-encoded compactly with sorted keys; anything else verbatim."""
    try:
        return msgspec.json.encode(msgspec.json.decode(arguments), order="sorted").decode()
    except (msgspec.DecodeError, msgspec.EncodeError, RecursionError):  # not JSON, or nested thousands deep
        return arguments


# --- parameters -----------------------------------------------------------------------------------------------


def _tools(raw: object) -> tuple[ToolSpec, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InvalidRequestError(f"tools must be an array of function tools or null, not {_kind(raw)}", "tools")
    specs: list[ToolSpec] = []
    for index, entry in enumerate(raw):
        path = f"tools[{index}]"
        tool = _object(entry, path)
        if tool.get("type") != "function":
            raise InvalidRequestError(
                f"{path}.type is {shown(tool.get('type'))}; only function tools are supported", f"{path}.type"
            )
        where = f"{path}.function"
        function = _sub(tool, "function", where, "an object with a name")
        name = string_at(function, "name", where, non_empty=True)
        description = optional_string_at(function, "description", where) or ""
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise InvalidRequestError(
                f"{where}.parameters must be a JSON schema object, not {_kind(parameters)}", f"{where}.parameters"
            )
        specs.append(ToolSpec(name=name, description=description, parameters=parameters or {}))
    return tuple(specs) or None


def _tool_choice(
    raw: object, tools: tuple[ToolSpec, ...] | None, extra: dict[str, Any]
) -> Literal["auto", "none", "required"] | None:
    """auto/none/required as a setting; a named function is kept in `extra` (and forces a call)."""
    if raw is None:
        return None
    if isinstance(raw, str):
        choice = _TOOL_CHOICES.get(raw)
        if choice is None:
            raise InvalidRequestError(
                f"tool_choice is {raw!r}; expected auto, none, required or a named function", "tool_choice"
            )
        return choice
    choice_object = _object(raw, "tool_choice")
    if choice_object.get("type") != "function":
        raise InvalidRequestError(
            f"tool_choice.type is {shown(choice_object.get('type'))}; only a named function "
            '({"type": "function", "function": {"name": ...}}) is supported',
            "tool_choice.type",
        )
    function = _sub(choice_object, "function", "tool_choice.function", "an object with a name")
    name = string_at(function, "name", "tool_choice.function", non_empty=True)
    if not any(spec.name == name for spec in tools or ()):
        raise InvalidRequestError(
            f"tool_choice.function.name {name!r} names no tool in tools; name one of the tools sent",
            "tool_choice.function.name",
        )
    extra["tool_choice"] = raw
    return "required"


def _optional_bool(item: Item, key: str, path: str) -> bool | None:
    value = item.get(key)
    if value is None or isinstance(value, bool):
        return value
    where = f"{path}.{key}" if path else key
    raise InvalidRequestError(f"{where} must be true or false, not {_kind(value)}", where)


def _number(item: Item, key: str, *, low: float, high: float, low_open: bool) -> float | None:
    value = item.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequestError(f"{key} must be a number, not {_kind(value)}", key)
    if not ((low < value if low_open else low <= value) and value <= high):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise InvalidRequestError(f"{key} is {value!r}; it must be in {interval}", key)
    return float(value)


def _max_tokens(body: Item) -> int | None:
    found: int | None = None
    for key in ("max_tokens", "max_completion_tokens"):  # the newer name wins when both are sent
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            shown = _kind(value) if not isinstance(value, int) or isinstance(value, bool) else repr(value)
            raise InvalidRequestError(f"{key} must be a positive integer, not {shown}", key)
        found = value
    return found
