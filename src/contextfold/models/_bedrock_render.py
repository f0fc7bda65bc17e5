"""Render a `Window` into Bedrock Converse's `system` blocks and `messages`, and check that grammar.

Converse wants the conversation to open with the user and to alternate, so consecutive messages of one role are
merged (a batch's `toolResult` blocks and the user's next words share one user message). Tool calls become
`toolUse` blocks with the arguments as a JSON object. Reasoning of the `bedrock` provider goes back as it came
(signed text, or redacted bytes). Images and documents go as bytes or S3 locations; Converse takes no web URLs,
so those are named in text instead.

Converse refuses `toolUse` and `toolResult` blocks unless the request declares tools (`toolConfig`), and a request
may drop its tools while its history holds calls (a later request of the conversation sends none). Declaring the
history's tools again would let the model call what the caller no longer offers, so then the calls and results are
written as text (`[called tool NAME with ARGS]`, `[result of NAME: OUTPUT]`): the model still reads what happened.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..events import ImagePart, Message, Part, Reasoning, TextPart
from ..view import Window
from ..view._render import USER_PLACEHOLDER, Payload, arguments_object, segments

PROVIDER = "bedrock"

_IMAGE_FORMATS = {"png", "jpeg", "gif", "webp"}
_DOCUMENT_FORMATS = {
    "application/pdf": "pdf",
    "text/csv": "csv",
    "text/html": "html",
    "text/plain": "txt",
    "text/markdown": "md",
}


def render_tools(window: Window) -> list[Payload]:
    tools = []
    for tool in window.tools or []:
        spec: Payload = {"name": tool.name, "inputSchema": {"json": tool.parameters or {"type": "object"}}}
        if tool.description:  # must not be empty when present
            spec["description"] = tool.description
        tools.append({"toolSpec": spec})
    return tools


def _bytes(data: str | None) -> bytes | None:
    try:
        return base64.b64decode(data or "", validate=True)
    except (binascii.Error, ValueError):
        return None


def _user_block(part: Part) -> Payload | None:
    """A user content block: text, an image or a document (bytes, or an S3 location); anything else is named."""
    if isinstance(part, TextPart):
        return {"text": part.text} if part.text.strip() else None  # blank text blocks are refused
    if isinstance(part, ImagePart):
        media_type, data, location = "image/" + part.url.rsplit(".", 1)[-1].lower(), None, part.url
        if part.url.startswith("data:") and ";base64," in part.url:
            media_type, encoded = part.url[5:].split(";base64,", 1)
            data, location = _bytes(encoded), ""
        label, name = part.url, "image"
    else:
        media_type, data, location = part.media_type, _bytes(part.data), part.file_id or ""
        label = name = part.filename or part.file_id or part.media_type
    source: Payload | None = {"s3Location": {"uri": location}} if location.startswith("s3://") else None
    if source is None and data is not None:
        source = {"bytes": data}
    image_format = media_type.removeprefix("image/").replace("jpg", "jpeg")
    if source is not None and media_type.startswith("image/") and image_format in _IMAGE_FORMATS:
        return {"image": {"format": image_format, "source": source}}
    if source is not None and media_type in _DOCUMENT_FORMATS:
        name = re.sub(r"[^A-Za-z0-9\-()\[\] ]+", " ", name).strip() or "document"  # the characters names may use
        return {"document": {"format": _DOCUMENT_FORMATS[media_type], "name": name, "source": source}}
    return {"text": f"[attachment not shown: {label}]"}


def _reasoning_block(reasoning: Reasoning) -> Payload | None:
    """Reasoning goes back as it came: signed text, or redacted bytes; unsigned reasoning is refused, so dropped."""
    if "redactedContent" in reasoning.data:
        data = _bytes(reasoning.data["redactedContent"])
        return {"reasoningContent": {"redactedContent": data}} if data is not None else None
    if not reasoning.data.get("signature"):
        return None
    text = {"text": reasoning.text or "", "signature": reasoning.data["signature"]}
    return {"reasoningContent": {"reasoningText": text}}


def _push(messages: list[Payload], role: str, blocks: list[Payload]) -> None:
    """Append blocks as a `role` message, merged into the last message when it has the same role."""
    if not blocks:
        return
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": blocks})


def render_bedrock(window: Window) -> tuple[list[Payload], list[Payload]]:
    """Converse `system` blocks and `messages`: user first, alternating, tool results in user messages.

    System and developer messages are hoisted into `system`, after the system prompt, in order.
    """
    system = [window.system_prompt] if window.system_prompt else []
    messages: list[Payload] = []
    for segment in segments(window.items):
        if isinstance(segment, Reasoning):
            block = _reasoning_block(segment) if segment.provider == PROVIDER else None
            _push(messages, "assistant", [block] if block else [])
        elif isinstance(segment, Message):
            texts = [p.text for p in segment.content if isinstance(p, TextPart) and p.text.strip()]
            if segment.role in ("system", "developer"):
                system.extend(texts)
            elif segment.role == "assistant":
                _push(messages, "assistant", [{"text": t} for t in texts])
            else:
                _push(messages, "user", [b for b in map(_user_block, segment.content) if b is not None])
        elif not window.tools:  # no toolConfig: tool blocks would be refused, so the batch is told as text
            names = {c.call_id: c.name for c in segment.calls}
            _push(
                messages, "assistant", [{"text": f"[called tool {c.name} with {c.arguments}]"} for c in segment.calls]
            )
            told = [
                {"text": f"[result of {names.get(r.call_id, r.call_id)}{' (error)' if r.is_error else ''}: {r.output}]"}
                for r in segment.results_in_call_order()
            ]
            _push(messages, "user", told)
        else:
            uses = [
                {"toolUse": {"toolUseId": c.call_id, "name": c.name, "input": arguments_object(c.arguments)}}
                for c in segment.calls
            ]
            _push(messages, "assistant", uses)
            results: list[Payload] = []
            for r in segment.results_in_call_order():
                result: Payload = {"toolUseId": r.call_id, "content": [{"text": r.output}]}
                if r.is_error:  # `status` is understood by Claude and Nova only; sent when it says something
                    result["status"] = "error"
                results.append({"toolResult": result})
            _push(messages, "user", results)
    if messages and messages[0]["role"] == "assistant":
        messages.insert(0, {"role": "user", "content": [{"text": USER_PLACEHOLDER}]})
    return [{"text": t} for t in system if t.strip()], messages


def validate_bedrock(messages: Sequence[Mapping[str, Any]], *, tools_declared: bool = True) -> list[str]:
    """Violations of Converse's grammar: user first, roles alternating, every toolUse answered by a toolResult in
    the very next (user) message, no toolResult without its toolUse just before, and (unless `tools_declared`, a
    request with a toolConfig) no tool blocks at all."""
    out: list[str] = []
    uses: set[str] = set()
    for at, message in enumerate(messages):
        role, blocks = message["role"], message["content"]
        if not tools_declared and any("toolUse" in b or "toolResult" in b for b in blocks):
            out.append(f"message {at} holds tool blocks, but the request declares no tools (toolConfig)")
        if at == 0 and role != "user":
            out.append("the first message must be from the user")
        if at > 0 and role == messages[at - 1]["role"]:
            out.append(f"message {at} repeats the role {role!r}")
        if not blocks:
            out.append(f"message {at} has no content")
        results = {b["toolResult"]["toolUseId"] for b in blocks if "toolResult" in b}
        out.extend(f"message {at}: toolResult {i!r} answers no toolUse of the message before" for i in results - uses)
        out.extend(f"toolUse {i!r} is not answered in message {at}" for i in uses - results)
        uses = {b["toolUse"]["toolUseId"] for b in blocks if "toolUse" in b}
    out.extend(f"toolUse {i!r} is never answered" for i in uses)
    return out
