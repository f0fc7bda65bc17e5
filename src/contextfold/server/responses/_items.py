"""contextfold events as OpenAI items (Responses output, Conversations items), and back (`parse_input`).

Output items are plain dicts in the shapes of the openai SDK's own models (`ResponseOutputItem`,
`ConversationItem`); the tests validate every one with them. In log order, events that are not items (turn markers,
configuration, usage, pins, deletions) and redacted (deleted) events give nothing. Each item's `id` is its event's
id, so a client can refer back to it (`item_reference`, the items endpoint).

- `Message` -> `message`: assistant text as `output_text`, other roles' as `input_text`; image and file parts as
  `input_image` / `input_file`.
- `ToolCall` -> `function_call`, `ToolResult` -> `function_call_output`.
- A call of a built-in tool (recall, expand) with its result -> ONE `mcp_call` item of server `contextfold`: the
  client did not run it and must not answer it, so it is shown the way OpenAI shows calls its server made. Its
  `ToolResult` gives nothing on its own; without one (yet) the item has status `calling` and no output.
- `Reasoning` -> `reasoning`: its summary (the provider's parts, else its text) and `encrypted_content` when the
  provider gave one.
- `Compaction` -> `compaction` created by `contextfold`, whose `encrypted_content` is readable text: the summary,
  or a line saying what was masked and how to read it back. Nothing in it is encrypted; it is our summary, and a
  client that gives the item back as input gives back that text.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from ...events import (
    AnyEvent,
    Compaction,
    FilePart,
    ImagePart,
    Message,
    Part,
    Reasoning,
    TextPart,
    ToolCall,
    ToolResult,
)
from ...runtime import EXPAND, RECALL
from ._hosted import hosted_item, is_hosted
from ._items_input import BUILTIN_SERVER_LABEL, ApprovalInput, CompactionInput, InputEntry, ItemReference, parse_input

__all__ = [
    "BUILTIN_SERVER_LABEL",
    "BUILTIN_TOOLS",
    "ApprovalInput",
    "CompactionInput",
    "InputEntry",
    "ItemReference",
    "conversation_item",
    "output_items",
    "parse_input",
]

BUILTIN_TOOLS: tuple[str, ...] = (RECALL, EXPAND)
"""The names of the server-side tools, shown as `mcp_call` items rather than function calls."""

Item = dict[str, Any]


def output_items(events: Sequence[AnyEvent], *, builtin_tools: Collection[str] = BUILTIN_TOOLS) -> list[Item]:
    """The items of `events`, in order. A built-in call takes its result from the first later `ToolResult` with
    its call id among `events`; a result whose call is not among them is shown as a `function_call_output`."""
    # Walk backwards so each call finds the first result after it, even if a call id was reused later in the log.
    pairs: dict[int, ToolResult] = {}
    following: dict[str, ToolResult] = {}
    for index in range(len(events) - 1, -1, -1):
        event = events[index]
        if isinstance(event, ToolResult):
            following[event.call_id] = event
        elif (
            isinstance(event, ToolCall)
            and (event.name in builtin_tools or is_hosted(event.name))
            and event.call_id in following
        ):
            pairs[index] = following.pop(event.call_id)
    absorbed = {id(result) for result in pairs.values()}
    out: list[Item] = []
    for index, event in enumerate(events):
        if id(event) in absorbed:
            continue
        item = conversation_item(event, result=pairs.get(index), builtin_tools=builtin_tools)
        if item is not None:
            out.append(item)
    return out


def conversation_item(
    event: AnyEvent, *, result: ToolResult | None = None, builtin_tools: Collection[str] = BUILTIN_TOOLS
) -> Item | None:
    """The item of one event, or None if it is not an item or was deleted.

    For a built-in call, `result` is its `ToolResult` (None while it runs). A `ToolResult` is always shown as a
    `function_call_output`: the caller must not pass the result of a built-in call (it belongs to the `mcp_call`).
    """
    if getattr(event, "redacted", False):
        return None
    if isinstance(event, Message):
        return _message(event)
    if isinstance(event, ToolCall):
        if is_hosted(event.name):
            return hosted_item(event, result)
        return _mcp_call(event, result) if event.name in builtin_tools else _function_call(event)
    if isinstance(event, ToolResult):
        return {
            "type": "function_call_output",
            "id": event.id,
            "call_id": event.call_id,
            "output": event.output,
            "status": "completed",
        }
    if isinstance(event, Reasoning):
        return _reasoning(event)
    if isinstance(event, Compaction):
        return {
            "type": "compaction",
            "id": event.id,
            "encrypted_content": compaction_text(event),
            "created_by": BUILTIN_SERVER_LABEL,
        }
    return None


def compaction_text(event: Compaction) -> str:
    """What a compaction item shows: its summary, or a line naming what it masked and how to read it back."""
    if event.summary:
        return event.summary
    if event.strategy == "clear":
        return (
            f"[contextfold clear compaction: the earlier context was cleared; recall or expand {event.id} to read it]"
        )
    count = len(event.masked)
    outputs = "tool output" if count == 1 else "tool outputs"
    return (
        f"[contextfold {event.strategy} compaction: {count} {outputs} masked; recall or expand {event.id} to read them]"
    )


def _part(part: Part, *, assistant: bool) -> Item:
    if isinstance(part, TextPart):
        return {"type": "output_text", "text": part.text, "annotations": []} if assistant else _input_text(part.text)
    if isinstance(part, ImagePart):
        return {"type": "input_image", "image_url": part.url, "detail": part.detail}
    if part.media_type.startswith("image/") and part.file_id is not None:
        return {"type": "input_image", "file_id": part.file_id, "detail": "auto"}
    return _file(part)


def _input_text(text: str) -> Item:
    return {"type": "input_text", "text": text}


def _file(part: FilePart) -> Item:
    item: Item = {"type": "input_file"}
    if part.file_id is not None:
        item["file_id"] = part.file_id
    else:
        item["file_data"] = f"data:{part.media_type};base64,{part.data or ''}"
    if part.filename:
        item["filename"] = part.filename
    return item


def _message(event: Message) -> Item:
    assistant = event.role == "assistant"
    return {
        "type": "message",
        "id": event.id,
        "role": event.role,
        "status": "completed",
        "content": [_part(part, assistant=assistant) for part in event.content],
    }


def _function_call(event: ToolCall) -> Item:
    return {
        "type": "function_call",
        "id": event.id,
        "call_id": event.call_id,
        "name": event.name,
        "arguments": event.arguments,
        "status": "completed",
    }


def _mcp_call(event: ToolCall, result: ToolResult | None) -> Item:
    item: Item = {
        "type": "mcp_call",
        "id": event.id,
        "server_label": BUILTIN_SERVER_LABEL,
        "name": event.name,
        "arguments": event.arguments,
        "output": result.output if result is not None else None,
        "status": "completed" if result is not None else "calling",
    }
    if result is not None and result.is_error:
        # The tool ran and reported a failure, as MCP tools do: its text as an execution error's content.
        item["error"] = {"type": "mcp_tool_execution_error", "content": [{"type": "text", "text": result.output}]}
    return item


def _reasoning(event: Reasoning) -> Item:
    given = event.data.get("summary")
    summary: list[Item]
    if isinstance(given, list) and given and all(_is_summary_part(part) for part in given):
        summary = [{"type": "summary_text", "text": part["text"]} for part in given]
    else:
        summary = [{"type": "summary_text", "text": event.text}] if event.text else []
    item: Item = {"type": "reasoning", "id": event.id, "summary": summary}
    encrypted = event.data.get("encrypted_content")
    if isinstance(encrypted, str):
        item["encrypted_content"] = encrypted
    return item


def _is_summary_part(part: object) -> bool:
    return isinstance(part, dict) and part.get("type") == "summary_text" and isinstance(part.get("text"), str)
