"""The fake coding model's two wires: a request body read into a `Prompt`, an `Answer` written back.

OpenAI Chat Completions (`chat.completion`, `chat.completion.chunk` SSE) and Anthropic Messages (`message`, named
SSE events), streamed or not, field for field as the real APIs send them (from the shapes in fake_openai and
fake_anthropic), with the usage counted by the fake's rule, and each wire's real error bodies, the context-length
refusal included.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from . import fake_anthropic as anthropic_wire
from ._server import Reply, sse
from .coding_model import Answer, Call, Prompt, PromptItem, Result, Text, tokens_of_text
from .fake_openai import CREATED, chat_chunk, error_body

Wire = Literal["openai-chat", "anthropic"]
JSON = dict[str, Any]

# --- prompts -----------------------------------------------------------------------------------------------------


def prompt_of(wire: Wire, body: JSON) -> Prompt:
    """What the model reads in a request body of `wire`."""
    return _chat_prompt(body) if wire == "openai-chat" else _anthropic_prompt(body)


def count_tokens(wire: Wire, body: JSON) -> int:
    """The upstream's count of a request body: what it reports as prompt tokens and checks against the window."""
    return prompt_of(wire, body).tokens


def _chat_prompt(body: JSON) -> Prompt:
    system: list[str] = []
    items: list[PromptItem] = []
    for message in body.get("messages") or []:
        role, text = message.get("role"), _text(message.get("content"))
        if role in ("system", "developer"):
            system.append(text)
        elif role == "tool":
            items.append(Result(str(message.get("tool_call_id") or ""), text))
        else:
            if text:
                items.append(Text(str(role), text))
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                items.append(
                    Call(str(call.get("id") or ""), str(function.get("name")), function.get("arguments") or "")
                )
    tools = [tool["function"] for tool in body.get("tools") or [] if "function" in tool]
    return Prompt("\n\n".join(system), tuple(items), *_tools(tools, "parameters"))


def _anthropic_prompt(body: JSON) -> Prompt:
    items: list[PromptItem] = []
    for message in body.get("messages") or []:
        role, content = str(message.get("role")), message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for block in blocks:
            kind = block.get("type")
            if kind == "text" and block.get("text"):
                items.append(Text(role, block["text"]))
            elif kind == "tool_use":
                items.append(Call(str(block.get("id")), str(block.get("name")), json.dumps(block.get("input") or {})))
            elif kind == "tool_result":
                items.append(Result(str(block.get("tool_use_id")), _text(block.get("content"))))
    return Prompt(_text(body.get("system")), tuple(items), *_tools(body.get("tools") or [], "input_schema"))


def _text(content: Any) -> str:
    """A content's text: a string, or the text parts of a list of parts (images and the like carry none)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part["text"] for part in content if isinstance(part, dict) and part.get("type") == "text")
    return ""


def _tools(tools: Sequence[JSON], schema_field: str) -> tuple[tuple[str, ...], int]:
    names = tuple(str(tool.get("name")) for tool in tools)
    chars = sum(
        len(str(tool.get("name")))
        + len(str(tool.get("description") or ""))
        + len(json.dumps(tool.get(schema_field) or {}, sort_keys=True))
        for tool in tools
    )
    return names, chars


# --- answers -----------------------------------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    """Stream pieces that join back to the text: one per word (spaces kept); a long text (the huge summary) in at
    most 64 slices, so a 100k-character answer is not 16k events."""
    if not text:
        return []
    words = text.split(" ")
    if len(words) <= _MAX_PIECES:
        return [w if i == 0 else " " + w for i, w in enumerate(words)]
    size = -(-len(text) // _MAX_PIECES)
    return [text[i : i + size] for i in range(0, len(text), size)]


_MAX_PIECES = 64


def _halves(arguments: str) -> list[str]:
    middle = len(arguments) // 2
    return [piece for piece in (arguments[:middle], arguments[middle:]) if piece]


def _completion_tokens(answer: Answer) -> int:
    return tokens_of_text(answer.call.name + answer.call.arguments if answer.call else answer.text)


def _chat_usage(prompt: int, completion: int) -> JSON:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


def chat_completion(answer: Answer, model: str, prompt_tokens: int) -> JSON:
    """A non-streamed `chat.completion`."""
    message: JSON = {"role": "assistant", "content": answer.text or None, "refusal": None, "annotations": []}
    if answer.call is not None:
        function = {"name": answer.call.name, "arguments": answer.call.arguments}
        message["tool_calls"] = [{"id": answer.call.call_id, "type": "function", "function": function}]
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": "tool_calls" if answer.call else "stop",
    }
    return {
        "id": "chatcmpl-coder",
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": [choice],
        "usage": _chat_usage(prompt_tokens, _completion_tokens(answer)),
        "system_fingerprint": "fp_fake",
        "service_tier": "default",
    }


def chat_chunks(answer: Answer, model: str, prompt_tokens: int, include_usage: bool) -> tuple[list[bytes], int | None]:
    """A streamed answer as Chat Completions SSE, and the index of the chunk with the first text delta (if any)."""
    chunks: list[JSON] = []
    first: int | None = None
    if answer.call is not None:
        call = answer.call
        start = {"index": 0, "id": call.call_id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        chunks.append(chat_chunk({"role": "assistant", "content": None, "tool_calls": [start]}, model=model))
        for piece in _halves(call.arguments):
            chunks.append(chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}, model=model))
    else:
        chunks.append(chat_chunk({"role": "assistant", "content": "", "refusal": None}, model=model))
        first = 1 if answer.text else None
        chunks += [chat_chunk({"content": piece}, model=model) for piece in _words(answer.text)]
    chunks.append(chat_chunk({}, finish_reason="tool_calls" if answer.call else "stop", model=model))
    if include_usage:
        chunks.append(chat_chunk(usage=_chat_usage(prompt_tokens, _completion_tokens(answer)), model=model))
    return sse(*chunks, done=True), first


def anthropic_message(answer: Answer, model: str, input_tokens: int) -> JSON:
    """A non-streamed Messages API `message`."""
    content: list[JSON] = [{"type": "text", "text": answer.text}] if answer.text else []
    if answer.call is not None:
        arguments = json.loads(answer.call.arguments)
        content.append({"type": "tool_use", "id": answer.call.call_id, "name": answer.call.name, "input": arguments})
    usage = {
        "input_tokens": input_tokens,
        "output_tokens": _completion_tokens(answer),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "service_tier": "standard",
    }
    return {
        "id": "msg_coder",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": "tool_use" if answer.call else "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }


def anthropic_chunks(answer: Answer, model: str, input_tokens: int) -> tuple[list[bytes], int | None]:
    """A streamed answer as Messages SSE, and the index of the event with the first text delta (if any)."""
    events = [anthropic_wire.message_start(model, input_tokens)]
    first: int | None = None
    if answer.call is not None:
        events += anthropic_wire.tool_block(0, answer.call.call_id, answer.call.name, _halves(answer.call.arguments))
    elif answer.text:
        first = 2  # message_start, content_block_start, then the first delta
        events += anthropic_wire.text_block(0, _words(answer.text))
    stop = "tool_use" if answer.call else "end_turn"
    events += [anthropic_wire.message_delta(stop, _completion_tokens(answer)), anthropic_wire.message_stop()]
    return anthropic_wire.chunks(events), first


# --- errors ------------------------------------------------------------------------------------------------------


def error_reply(wire: Wire, status: int, message: str) -> Reply:
    if wire == "anthropic":
        kind = "invalid_request_error" if status == 400 else "api_error"
        return anthropic_wire.error_reply(status, kind, message)
    kind = "invalid_request_error" if status == 400 else "server_error"
    return Reply(status, json=error_body(message, None, type=kind))


def context_length_error(wire: Wire, tokens: int, window: int) -> Reply:
    """The context-length refusal each API really sends."""
    if wire == "anthropic":
        message = f"prompt is too long: {tokens} tokens > {window} maximum"
        return anthropic_wire.error_reply(400, "invalid_request_error", message)
    message = (
        f"This model's maximum context length is {window} tokens. However, your messages resulted in {tokens} "
        "tokens. Please reduce the length of the messages."
    )
    return Reply(400, json=error_body(message, "context_length_exceeded", param="messages"))
