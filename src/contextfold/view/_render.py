"""Render a `Window` into the request payloads of four provider wire APIs.

Each renderer returns plain JSON-ready dicts in the API's own shape (what goes into the request body):

    render_openai_chat(window)       -> messages                     (Chat Completions `messages`)
    render_openai_responses(window)  -> (instructions, input items)   (Responses `instructions`, `input`)
    render_anthropic(window)         -> (system, messages)            (Messages API `system`, `messages`)
    render_gemini(window)            -> (systemInstruction, contents) (generateContent)

Shared rules:
- The calls of one parallel batch (same `batch_id`, contiguous) become one assistant turn; their results
  follow in call order, however the tools finished.
- A `Message` with no content (for example an erased one) renders to nothing: Anthropic and Gemini reject
  empty content, and nothing is lost by leaving it out elsewhere.
- `Reasoning` is opaque state of the provider that produced it; it is passed back to that provider only.
- Renderers are faithful, not corrective: a window that breaks the tool-call pairing renders to a payload that
  breaks the API's grammar, and `_grammar` reports it. `_grammar.repair` is the corrective step.
"""

from __future__ import annotations

import base64
import binascii
import json
import mimetypes
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..events import ImagePart, Item, Message, Part, Reasoning, TextPart, ToolCall, ToolResult
from ._fold import Window

Payload = dict[str, Any]

USER_PLACEHOLDER = "(continuing the conversation)"
"""Sent as the first user message when a window opens with the assistant (after a compaction folded away the
user message before it): Anthropic requires the first message to be from the user, Gemini the first turn."""


@dataclass(frozen=True, slots=True)
class Batch:
    """A run of tool calls sharing a `batch_id` and the run of results right after it."""

    calls: list[ToolCall]
    results: list[ToolResult]

    def results_in_call_order(self) -> list[ToolResult]:
        """The results sorted into call order, however the tools finished (unknown calls last)."""
        order = {call.call_id: index for index, call in enumerate(self.calls)}
        return sorted(self.results, key=lambda result: order.get(result.call_id, len(order)))


Segment = Message | Reasoning | Batch


def segments(items: Sequence[Item]) -> list[Segment]:
    """Group the items: each run of calls of one batch with the results that directly follow it.

    A run of results with no calls before it becomes a `Batch` with no calls, so the renderers still show it.
    """
    out: list[Segment] = []
    i, n = 0, len(items)
    while i < n:
        item = items[i]
        if isinstance(item, (Message, Reasoning)):
            out.append(item)
            i += 1
            continue
        calls: list[ToolCall] = []
        while i < n and isinstance(call := items[i], ToolCall) and call.batch_id == getattr(item, "batch_id", None):
            calls.append(call)
            i += 1
        results: list[ToolResult] = []
        while i < n and isinstance(result := items[i], ToolResult):
            results.append(result)
            i += 1
        out.append(Batch(calls, results))
    return out


def tool_names(items: Iterable[Item]) -> dict[str, str]:
    """call_id -> tool name, for APIs whose results must name the tool."""
    return {item.call_id: item.name for item in items if isinstance(item, ToolCall)}


def arguments_object(arguments: str) -> dict[str, Any]:
    """A call's JSON arguments as an object (Anthropic `input`, Gemini `args` must be objects).

    Empty (erased) arguments give `{}`; arguments that are not a JSON object are kept under `"arguments"`.
    """
    if not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except (ValueError, RecursionError):  # nested deeper than the parser goes: kept as text, like invalid JSON
        return {"arguments": arguments}
    return value if isinstance(value, dict) else {"arguments": value}


def _data_url(url: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a `data:<type>;base64,<data>` URL, else None."""
    if not url.startswith("data:") or ";base64," not in url:
        return None
    header, data = url[5:].split(";base64,", 1)
    return header or "application/octet-stream", data


def _texts(message: Message) -> list[str]:
    return [part.text for part in message.content if isinstance(part, TextPart) and part.text]


def _system_texts(window: Window) -> list[str]:
    """The system prompt, then every system/developer message's text, in order (for APIs that hoist them)."""
    texts = [window.system_prompt] if window.system_prompt else []
    for item in window.items:
        if isinstance(item, Message) and item.role in ("system", "developer"):
            texts.extend(_texts(item))
    return texts


# --- OpenAI Chat Completions --------------------------------------------------------------------------------


def _chat_part(part: Part) -> Payload:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if isinstance(part, ImagePart):
        return {"type": "image_url", "image_url": {"url": part.url, "detail": part.detail}}
    if part.media_type.startswith("image/") and part.data is not None:
        return {"type": "image_url", "image_url": {"url": f"data:{part.media_type};base64,{part.data}"}}
    if part.file_id is not None:
        return {"type": "file", "file": {"file_id": part.file_id}}
    file: Payload = {"file_data": f"data:{part.media_type};base64,{part.data or ''}"}
    if part.filename:
        file["filename"] = part.filename
    return {"type": "file", "file": file}


def _chat_content(message: Message) -> str | list[Payload]:
    parts = [p for p in message.content if not isinstance(p, TextPart) or p.text]
    if message.role != "user":  # only user messages take images and files
        parts = [p for p in parts if isinstance(p, TextPart)]
    if len(parts) == 1 and isinstance(parts[0], TextPart):
        return parts[0].text
    return [_chat_part(p) for p in parts]


def render_openai_chat(window: Window) -> list[Payload]:
    """Chat Completions `messages`: a leading system message, then the items; reasoning is dropped."""
    out: list[Payload] = []
    if window.system_prompt:
        out.append({"role": "system", "content": window.system_prompt})
    merge_turn: tuple[str | None] | None = None  # turn of the assistant text message at out[-1], if any
    for segment in segments(window.items):
        if isinstance(segment, Reasoning):
            continue
        if isinstance(segment, Message):
            content = _chat_content(segment)
            if content:  # nothing left (an erased message, or an assistant one with only images) is skipped
                out.append({"role": segment.role, "content": content})
                merge_turn = (segment.turn_id,) if segment.role == "assistant" else None
            continue
        if segment.calls:
            calls = [
                {"id": c.call_id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in segment.calls
            ]
            if merge_turn == (segment.calls[0].turn_id,):
                out[-1]["tool_calls"] = calls
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": calls})
        out.extend(
            {"role": "tool", "tool_call_id": r.call_id, "content": r.output} for r in segment.results_in_call_order()
        )
        merge_turn = None
    return out


# --- OpenAI Responses ---------------------------------------------------------------------------------------


def _responses_part(part: Part) -> Payload:
    if isinstance(part, TextPart):
        return {"type": "input_text", "text": part.text}
    if isinstance(part, ImagePart):
        return {"type": "input_image", "image_url": part.url, "detail": part.detail}
    if part.media_type.startswith("image/"):
        if part.file_id is not None:
            return {"type": "input_image", "file_id": part.file_id, "detail": "auto"}
        url = f"data:{part.media_type};base64,{part.data or ''}"
        return {"type": "input_image", "image_url": url, "detail": "auto"}
    if part.file_id is not None:
        return {"type": "input_file", "file_id": part.file_id}
    file: Payload = {"type": "input_file", "file_data": f"data:{part.media_type};base64,{part.data or ''}"}
    if part.filename:
        file["filename"] = part.filename
    return file


def _responses_reasoning(reasoning: Reasoning) -> Payload:
    """The reasoning item as the provider returned it (`data`: id, summary, encrypted_content)."""
    item: Payload = {**reasoning.data, "type": "reasoning"}
    if "summary" not in item:  # required, even when empty
        text = reasoning.text
        item["summary"] = [{"type": "summary_text", "text": text}] if text else []
    return item


def render_openai_responses(window: Window, *, reasoning_from: str = "openai") -> tuple[str | None, list[Payload]]:
    """Responses `instructions` and `input` items; system/developer messages stay message items.

    `reasoning_from` names the provider whose reasoning items are passed back (another value for a deployment
    of the same models under another name, for example Azure).
    """
    out: list[Payload] = []
    for segment in segments(window.items):
        if isinstance(segment, Reasoning):
            if segment.provider == reasoning_from:
                out.append(_responses_reasoning(segment))
        elif isinstance(segment, Message):
            if segment.role == "assistant":  # input_text is refused here: only output_text and refusal
                content = [{"type": "output_text", "text": text} for text in _texts(segment)]
            else:
                content = [_responses_part(p) for p in segment.content if not isinstance(p, TextPart) or p.text]
            if content:
                out.append({"type": "message", "role": segment.role, "content": content})
        else:
            out.extend(
                {"type": "function_call", "call_id": c.call_id, "name": c.name, "arguments": c.arguments}
                for c in segment.calls
            )
            out.extend(
                {"type": "function_call_output", "call_id": r.call_id, "output": r.output}
                for r in segment.results_in_call_order()
            )
    return window.system_prompt or None, out


# --- Anthropic Messages -------------------------------------------------------------------------------------


def _anthropic_part(part: Part) -> Payload | None:
    if isinstance(part, TextPart):  # the API refuses text blocks that are empty or only whitespace
        return {"type": "text", "text": part.text} if part.text.strip() else None
    if isinstance(part, ImagePart):
        inline = _data_url(part.url)
        if inline is not None:
            media_type, data = inline
            return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
        return {"type": "image", "source": {"type": "url", "url": part.url}}
    kind = "image" if part.media_type.startswith("image/") else "document"
    if part.file_id is not None:
        return {"type": kind, "source": {"type": "file", "file_id": part.file_id}}
    data = part.data or ""
    if part.media_type.startswith("text/"):  # base64 documents must be PDF; plain text has its own source
        try:
            text = base64.b64decode(data, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            text = data
        return {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": text}}
    return {"type": kind, "source": {"type": "base64", "media_type": part.media_type, "data": data}}


def _anthropic_thinking(reasoning: Reasoning) -> Payload | None:
    """A thinking block goes back verbatim with its signature; without one the API refuses it, so drop it."""
    data = reasoning.data
    if data.get("type") == "redacted_thinking" or ("data" in data and "signature" not in data):
        return {"type": "redacted_thinking", "data": data.get("data", "")}
    if not data.get("signature"):
        return None
    thinking = reasoning.text if reasoning.text is not None else data.get("thinking", "")
    return {"type": "thinking", "thinking": thinking, "signature": data["signature"]}


def _push(messages: list[Payload], role: str, blocks: list[Payload]) -> None:
    """Append blocks as a `role` message, merged into the last message when it has the same role."""
    if not blocks:
        return
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": blocks})


def render_anthropic(window: Window, *, reasoning_from: str = "anthropic") -> tuple[str | None, list[Payload]]:
    """Messages API `system` and `messages`: alternating, user first, content as lists of blocks.

    System and developer messages are hoisted into `system`, after the system prompt, in order.
    `reasoning_from` names the provider whose thinking blocks are passed back (for example Bedrock's).
    """
    messages: list[Payload] = []
    for segment in segments(window.items):
        if isinstance(segment, Reasoning):
            thinking = _anthropic_thinking(segment) if segment.provider == reasoning_from else None
            _push(messages, "assistant", [thinking] if thinking else [])
        elif isinstance(segment, Message):
            if segment.role == "user":
                blocks = [b for b in map(_anthropic_part, segment.content) if b is not None]
                _push(messages, "user", blocks)
            elif segment.role == "assistant":
                texts = [t for t in _texts(segment) if t.strip()]
                _push(messages, "assistant", [{"type": "text", "text": t} for t in texts])
        else:
            uses = [
                {"type": "tool_use", "id": c.call_id, "name": c.name, "input": arguments_object(c.arguments)}
                for c in segment.calls
            ]
            _push(messages, "assistant", uses)
            results: list[Payload] = []
            for r in segment.results_in_call_order():
                block: Payload = {"type": "tool_result", "tool_use_id": r.call_id, "content": r.output}
                if r.is_error:
                    block["is_error"] = True
                results.append(block)
            _push(messages, "user", results)
    if messages and messages[0]["role"] == "assistant":
        messages.insert(0, {"role": "user", "content": [{"type": "text", "text": USER_PLACEHOLDER}]})
    return "\n\n".join(_system_texts(window)) or None, messages


# --- Gemini generateContent ---------------------------------------------------------------------------------


def _gemini_part(part: Part) -> Payload | None:
    if isinstance(part, TextPart):
        return {"text": part.text} if part.text else None
    if isinstance(part, ImagePart):
        inline = _data_url(part.url)
        if inline is not None:
            return {"inlineData": {"mimeType": inline[0], "data": inline[1]}}
        file: Payload = {"fileUri": part.url}
        guessed = mimetypes.guess_type(part.url)[0]
        if guessed:
            file = {"mimeType": guessed, **file}
        return {"fileData": file}
    if part.file_id is not None:
        return {"fileData": {"mimeType": part.media_type, "fileUri": part.file_id}}
    return {"inlineData": {"mimeType": part.media_type, "data": part.data or ""}}


def _gemini_push(contents: list[Payload], role: str, parts: list[Payload]) -> None:
    if not parts:
        return
    if contents and contents[-1]["role"] == role:
        contents[-1]["parts"].extend(parts)
    else:
        contents.append({"role": role, "parts": parts})


def render_gemini(window: Window) -> tuple[Payload | None, list[Payload]]:
    """generateContent `systemInstruction` and `contents` (roles user/model). Gemini reasoning carries the thought
    signature of a function call, which goes back on that call; other reasoning is dropped."""
    names = tool_names(window.items)
    signatures = {
        item.data["call_id"]: item.data["thought_signature"]
        for item in window.items
        if isinstance(item, Reasoning)
        and item.provider == "gemini"
        and {"call_id", "thought_signature"} <= item.data.keys()
    }
    contents: list[Payload] = []
    for segment in segments(window.items):
        if isinstance(segment, Reasoning):
            continue
        if isinstance(segment, Message):
            if segment.role == "user":
                _gemini_push(contents, "user", [p for p in map(_gemini_part, segment.content) if p is not None])
            elif segment.role == "assistant":
                _gemini_push(contents, "model", [{"text": t} for t in _texts(segment)])
            continue
        calls: list[Payload] = []
        for c in segment.calls:
            part: Payload = {"functionCall": {"name": c.name, "args": arguments_object(c.arguments)}}
            if c.call_id in signatures:
                part["thoughtSignature"] = signatures[c.call_id]
            calls.append(part)
        _gemini_push(contents, "model", calls)
        responses = [
            {
                "functionResponse": {
                    "name": names.get(r.call_id, ""),
                    "response": {"error" if r.is_error else "output": r.output},
                }
            }
            for r in segment.results_in_call_order()
        ]
        _gemini_push(contents, "user", responses)
    if contents and contents[0]["role"] == "model":
        contents.insert(0, {"role": "user", "parts": [{"text": USER_PLACEHOLDER}]})
    system = _system_texts(window)
    return ({"parts": [{"text": t} for t in system]} if system else None), contents
