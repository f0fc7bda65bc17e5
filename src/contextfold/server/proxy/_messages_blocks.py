"""Content blocks of a Messages API message parsed into contextfold events (for `_messages_parse`).

- user: `text` -> `TextPart`; `image` (base64 source -> `ImagePart` with a data URL, url source -> `ImagePart`, file
  source -> `FilePart(media_type="image/*", file_id)`); `document` (base64 -> `FilePart` with the data, text ->
  `FilePart("text/plain")` holding the text base64-encoded, file -> `FilePart` by id; the title becomes the file
  name); `tool_result` -> `ToolResult` (text blocks joined by newlines). The results come first, then one user
  `Message` with the other blocks, the order in which the Messages API reads them. An image inside a tool result
  (which a `ToolResult` cannot hold) moves into that message, and the result's text says so.
- assistant: `thinking` / `redacted_thinking` -> `Reasoning(provider="anthropic")` exactly as `models._anthropic`
  stores them (so `render_anthropic` gives them back unchanged), then one assistant `Message` with the text blocks,
  then the `tool_use` blocks as `ToolCall`s sharing one batch id (arguments: compact JSON of `input`): the order in
  which the runtime logs a model's answer.
- server tool blocks (`server_tool_use`, `web_search_tool_result`, ...) are refused: the proxy cannot run them.
What our events cannot hold is refused, never dropped, unless it is presentation only (cache_control, citations,
unknown keys). Every mistake raises `InvalidRequestError` naming the exact path.
"""

from __future__ import annotations

import base64
import json

from ..._errors import InvalidRequestError
from ...events import Event, FilePart, ImagePart, Message, Part, Reasoning, TextPart, ToolCall, ToolResult, new_id
from ..edge._items_fields import _kind, optional_string_at, shown, string_at, wrong

PROVIDER = "anthropic"
"""The `Reasoning.provider` of thinking blocks, as the Anthropic adapter stores them."""

TOOL_RESULT_IMAGE = "[image: attached after the tool results]"
"""The line a tool result's text gets for each of its images, which follow the results in a user message."""

USER_BLOCKS = "text, image, document or tool_result"
ASSISTANT_BLOCKS = "text, tool_use, thinking or redacted_thinking"
Body = dict[str, object]


def user_events(blocks: list[object], where: str) -> tuple[Event, ...]:
    """The events of a user message's blocks (`where` is the path of its content): results, then a message."""
    results: list[Event] = []
    parts: list[Part] = []
    attached: list[Part] = []  # images of tool results, which the user message after the results carries
    for index, raw in enumerate(blocks):
        path = f"{where}[{index}]"
        block = object_at(raw, path)
        kind = _block_type(block, path, "user", USER_BLOCKS)
        if kind == "text":
            parts.append(TextPart(string_at(block, "text", path)))
        elif kind == "image":
            parts.append(_image(block, path))
        elif kind == "document":
            parts.append(_document(block, path))
        elif kind == "tool_result":
            results.append(_tool_result(block, path, attached))
        else:
            raise _unsupported(kind, path, "user", USER_BLOCKS)
    if parts or attached:
        results.append(Message(role="user", content=attached + parts))
    return tuple(results)


def assistant_events(blocks: list[object], where: str) -> tuple[Event, ...]:
    """The events of an assistant message's blocks: its reasoning, its text as one message, its calls as a batch."""
    reasoning: list[Event] = []
    texts: list[Part] = []
    calls: list[Event] = []
    batch = ""
    for index, raw in enumerate(blocks):
        path = f"{where}[{index}]"
        block = object_at(raw, path)
        kind = _block_type(block, path, "assistant", ASSISTANT_BLOCKS)
        if kind == "text":
            texts.append(TextPart(string_at(block, "text", path)))
        elif kind == "tool_use":
            batch = batch or new_id("batch")
            calls.append(_tool_use(block, path, batch))
        elif kind == "thinking":
            thinking = string_at(block, "thinking", path)
            data = {"type": "thinking", "thinking": thinking, "signature": string_at(block, "signature", path)}
            reasoning.append(Reasoning(provider=PROVIDER, data=data, text=thinking))
        elif kind == "redacted_thinking":
            data = {"type": "redacted_thinking", "data": string_at(block, "data", path)}
            reasoning.append(Reasoning(provider=PROVIDER, data=data))
        else:
            raise _unsupported(kind, path, "assistant", ASSISTANT_BLOCKS)
    message: list[Event] = [Message(role="assistant", content=texts)] if texts else []
    return (*reasoning, *message, *calls)


def _block_type(block: Body, path: str, role: str, accepted: str) -> str:
    kind = block.get("type")
    if not isinstance(kind, str):
        raise InvalidRequestError(
            f"{path}.type is {shown(kind)}; a {role} message accepts {accepted} blocks", f"{path}.type"
        )
    return kind


def _unsupported(kind: str, path: str, role: str, accepted: str) -> InvalidRequestError:
    if kind in ("tool_use", "thinking", "redacted_thinking"):
        why = f"{kind} blocks belong in assistant messages"
    elif kind in ("tool_result", "image", "document"):
        why = f"{kind} blocks belong in user messages"
    elif kind.startswith(("server_tool_use", "web_", "code_execution", "bash_code", "text_editor", "tool_search")):
        why = f"{kind} blocks come from server tools, which the proxy does not run"
    else:
        why = f"the proxy does not support {kind} blocks"
    return InvalidRequestError(f"{path}.type is {kind!r}: {why}; a {role} message accepts {accepted}", f"{path}.type")


def _tool_use(block: Body, path: str, batch: str) -> ToolCall:
    call_id = string_at(block, "id", path, non_empty=True)
    name = string_at(block, "name", path, non_empty=True)
    arguments = block.get("input")
    if not isinstance(arguments, dict):
        raise wrong(f"{path}.input", "an object (the tool's arguments)", arguments)
    compact = json.dumps(arguments, separators=(",", ":"), ensure_ascii=False)
    return ToolCall(call_id=call_id, name=name, arguments=compact, batch_id=batch)


def _tool_result(block: Body, path: str, attached: list[Part]) -> ToolResult:
    call_id = string_at(block, "tool_use_id", path, non_empty=True)
    is_error = block.get("is_error")
    if is_error is not None and not isinstance(is_error, bool):
        raise InvalidRequestError(f"{path}.is_error must be true or false, not {_kind(is_error)}", f"{path}.is_error")
    content = block.get("content")
    where = f"{path}.content"
    if content is None or isinstance(content, str):
        return ToolResult(call_id=call_id, output=content or "", is_error=bool(is_error))
    if not isinstance(content, list):
        raise wrong(where, "a string or an array of text and image blocks", content)
    lines: list[str] = []
    for index, raw in enumerate(content):
        part_path = f"{where}[{index}]"
        part = object_at(raw, part_path)
        kind = part.get("type")
        if kind == "text":
            lines.append(string_at(part, "text", part_path))
        elif kind == "image":
            attached.append(_image(part, part_path))
            lines.append(TOOL_RESULT_IMAGE)
        else:
            raise InvalidRequestError(
                f"{part_path}.type is {shown(kind)}; a tool result may hold text and image blocks",
                f"{part_path}.type",
            )
    return ToolResult(call_id=call_id, output="\n".join(lines), is_error=bool(is_error))


def _source(block: Body, path: str) -> tuple[Body, str, str]:
    """The block's `source`, its path and its type."""
    where = f"{path}.source"
    source = block.get("source")
    if not isinstance(source, dict):
        raise wrong(where, "an object", source)
    kind = source.get("type")
    return source, where, kind if isinstance(kind, str) else ""


def _image(block: Body, path: str) -> Part:
    source, where, kind = _source(block, path)
    if kind == "base64":
        media_type = string_at(source, "media_type", where, non_empty=True)
        return ImagePart(f"data:{media_type};base64,{string_at(source, 'data', where, non_empty=True)}")
    if kind == "url":
        return ImagePart(string_at(source, "url", where, non_empty=True))
    if kind == "file":
        return FilePart(media_type="image/*", file_id=string_at(source, "file_id", where, non_empty=True))
    raise InvalidRequestError(
        f"{where}.type is {shown(source.get('type'))}; an image source is base64, url or file", f"{where}.type"
    )


def _document(block: Body, path: str) -> FilePart:
    source, where, kind = _source(block, path)
    title = optional_string_at(block, "title", path) or None
    if kind == "base64":
        media_type = string_at(source, "media_type", where, non_empty=True)
        return FilePart(media_type=media_type, data=string_at(source, "data", where, non_empty=True), filename=title)
    if kind == "text":
        # FilePart data is base64; the Anthropic renderer decodes a text/* file back into a text source.
        data = base64.b64encode(string_at(source, "data", where).encode()).decode()
        return FilePart(media_type="text/plain", data=data, filename=title)
    if kind == "file":
        file_id = string_at(source, "file_id", where, non_empty=True)
        return FilePart(media_type="application/octet-stream", file_id=file_id, filename=title)
    if kind in ("url", "content"):
        raise InvalidRequestError(
            f"{where}.type {kind!r} is not supported by the proxy; send the document as a base64, text or file source",
            f"{where}.type",
        )
    raise InvalidRequestError(
        f"{where}.type is {shown(source.get('type'))}; a document source is base64, text or file", f"{where}.type"
    )


# --- field access -------------------------------------------------------------------------------------------------


def object_at(value: object, path: str) -> Body:
    if not isinstance(value, dict):
        raise wrong(path, "an object", value)
    return value
