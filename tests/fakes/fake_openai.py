"""Wire shapes of OpenAI's streaming APIs, for the loopback fake server: Chat Completions chunks, Responses events,
and error bodies, as the real API sends them (field for field), so the tests run the real SDK parser on them.

    server.reply(StreamReply(chat_stream(chat_text("Hel", "lo"), chat_finish("stop"), chat_usage(10, 2))))
    server.reply(StreamReply(responses_stream(*responses_text("Hel", "lo"), completed(...))))
    server.reply(Reply(429, json=error_body("slow down", "rate_limit_exceeded"), headers={"retry-after": "0"}))
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from contextfold.events import Item, ToolCall, ToolResult, ToolSpec, assistant, user
from contextfold.view import Window

from ._server import Reply, Request, StreamReply, sse

JSON = dict[str, Any]


CHUNK_ID = "chatcmpl-fake"
CREATED = 1_760_000_000


def error_body(
    message: str, code: str | None = None, type: str = "invalid_request_error", param: str | None = None
) -> JSON:
    """OpenAI's error answer: `{"error": {"message", "type", "code", "param"}}`."""
    return {"error": {"message": message, "type": type, "code": code, "param": param}}


def context_length_body() -> JSON:
    return error_body(
        "This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens.",
        "context_length_exceeded",
        param="messages",
    )


# --- Chat Completions ----------------------------------------------------------------------------------------


def chat_chunk(
    delta: JSON | None = None, *, finish_reason: str | None = None, usage: JSON | None = None, model: str = "gpt-4o"
) -> JSON:
    """One `chat.completion.chunk`; with `usage` and no delta it is the final usage-only chunk (empty choices)."""
    choices = []
    if delta is not None or finish_reason is not None:
        choices = [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish_reason}]
    return {
        "id": CHUNK_ID,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": choices,
        "usage": usage,
    }


def chat_text(*pieces: str, model: str = "gpt-4o") -> list[JSON]:
    """The role chunk, then one content chunk per piece."""
    first = chat_chunk({"role": "assistant", "content": "", "refusal": None}, model=model)
    return [first, *(chat_chunk({"content": piece}, model=model) for piece in pieces)]


def chat_tool_call(index: int, call_id: str, name: str, *argument_pieces: str) -> list[JSON]:
    """A tool call as OpenAI streams it: id, name and empty arguments first, then the arguments in pieces."""
    start = {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
    chunks = [chat_chunk({"tool_calls": [start]})]
    chunks += [chat_chunk({"tool_calls": [{"index": index, "function": {"arguments": p}}]}) for p in argument_pieces]
    return chunks


def chat_finish(reason: str) -> JSON:
    return chat_chunk({}, finish_reason=reason)


def chat_usage(prompt: int, completion: int, cached: int = 0) -> JSON:
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }
    return chat_chunk(usage=usage)


def chat_stream(*parts: JSON | Iterable[JSON], done: bool = True) -> list[bytes]:
    """SSE bytes of the chunks (each part a chunk or a list of them), ending with `data: [DONE]`."""
    chunks: list[JSON] = []
    for part in parts:
        chunks.extend([part] if isinstance(part, dict) else part)
    return sse(*chunks, done=done)


def chat_answer(text: str, *, prompt: int = 10, completion: int = 3, model: str = "gpt-4o") -> StreamReply:
    """A whole streamed text answer, split into words."""
    words = text.split(" ")
    pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
    return StreamReply(
        chat_stream(chat_text(*pieces, model=model), chat_finish("stop"), chat_usage(prompt, completion))
    )


def last_user_text(request: Request) -> str:
    """The text of the last user message (Chat `messages`) or input item (Responses `input`) of a request."""
    body = request.json
    items = body.get("messages") or body.get("input") or []
    for item in reversed(items):
        if item.get("role") == "user":
            content = item["content"]
            return content if isinstance(content, str) else " ".join(part["text"] for part in content)
    return ""


def models_list(*entries: JSON) -> Reply:
    """GET /models: `{"object": "list", "data": [...]}`, each entry an `object: model` plus the server's extras."""
    data = [{"object": "model", "created": CREATED, "owned_by": "fake", **entry} for entry in entries]
    return Reply(200, json={"object": "list", "data": data})


# --- Responses -----------------------------------------------------------------------------------------------


class ResponsesEvents:
    """Builds one Responses stream: events get consecutive `sequence_number`s and output items their indexes."""

    def __init__(self, model: str = "gpt-4.1", response_id: str = "resp_fake") -> None:
        self.model = model
        self.id = response_id
        self.events: list[JSON] = []
        self.output: list[JSON] = []

    def _add(self, type: str, **fields: Any) -> None:
        self.events.append({"type": type, "sequence_number": len(self.events), **fields})

    def response(self, status: str, **fields: Any) -> JSON:
        return {
            "id": self.id,
            "object": "response",
            "created_at": CREATED,
            "status": status,
            "model": self.model,
            "output": list(self.output) if status != "in_progress" else [],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "error": None,
            "incomplete_details": None,
            "usage": None,
            **fields,
        }

    def created(self) -> ResponsesEvents:
        self._add("response.created", response=self.response("in_progress"))
        self._add("response.in_progress", response=self.response("in_progress"))
        return self

    def text(self, *pieces: str, item_id: str = "msg_1") -> ResponsesEvents:
        index = len(self.output)
        item: JSON = {"id": item_id, "type": "message", "role": "assistant", "status": "in_progress", "content": []}
        self._add("response.output_item.added", output_index=index, item=item)
        part: JSON = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        self._add("response.content_part.added", item_id=item_id, output_index=index, content_index=0, part=part)
        for piece in pieces:
            self._add(
                "response.output_text.delta",
                item_id=item_id,
                output_index=index,
                content_index=0,
                delta=piece,
                logprobs=[],
            )
        text = "".join(pieces)
        self._add(
            "response.output_text.done", item_id=item_id, output_index=index, content_index=0, text=text, logprobs=[]
        )
        done_part = {**part, "text": text}
        self._add("response.content_part.done", item_id=item_id, output_index=index, content_index=0, part=done_part)
        item = {**item, "status": "completed", "content": [done_part]}
        self._add("response.output_item.done", output_index=index, item=item)
        self.output.append(item)
        return self

    def function_call(self, call_id: str, name: str, *argument_pieces: str) -> ResponsesEvents:
        index = len(self.output)
        item_id = f"fc_{index}"
        item: JSON = {"id": item_id, "type": "function_call", "status": "in_progress", "call_id": call_id, "name": name}
        self._add("response.output_item.added", output_index=index, item={**item, "arguments": ""})
        for piece in argument_pieces:
            self._add("response.function_call_arguments.delta", item_id=item_id, output_index=index, delta=piece)
        arguments = "".join(argument_pieces)
        self._add("response.function_call_arguments.done", item_id=item_id, output_index=index, arguments=arguments)
        done = {**item, "status": "completed", "arguments": arguments}
        self._add("response.output_item.done", output_index=index, item=done)
        self.output.append(done)
        return self

    def reasoning(self, encrypted: str | None = "gAAAA-opaque", summary: Sequence[str] = ()) -> ResponsesEvents:
        index = len(self.output)
        item: JSON = {"id": f"rs_{index}", "type": "reasoning", "summary": []}
        self._add("response.output_item.added", output_index=index, item=item)
        done: JSON = {**item, "summary": [{"type": "summary_text", "text": s} for s in summary]}
        if encrypted is not None:
            done["encrypted_content"] = encrypted
        self._add("response.output_item.done", output_index=index, item=done)
        self.output.append(done)
        return self

    def completed(self, input_tokens: int = 10, output_tokens: int = 3, cached: int = 0) -> ResponsesEvents:
        self._add(
            "response.completed", response=self.response("completed", usage=usage(input_tokens, output_tokens, cached))
        )
        return self

    def incomplete(
        self, reason: str = "max_output_tokens", input_tokens: int = 10, output_tokens: int = 3
    ) -> ResponsesEvents:
        response = self.response(
            "incomplete", incomplete_details={"reason": reason}, usage=usage(input_tokens, output_tokens)
        )
        self._add("response.incomplete", response=response)
        return self

    def failed(self, code: str, message: str) -> ResponsesEvents:
        self._add("response.failed", response=self.response("failed", error={"code": code, "message": message}))
        return self

    def error(self, code: str | None, message: str) -> ResponsesEvents:
        self._add("error", code=code, message=message, param=None)
        return self

    def chunks(self) -> list[bytes]:
        """SSE bytes: each event named by its type, as OpenAI sends them (no `[DONE]` on this API)."""
        return sse(*self.events, event_names=[e["type"] for e in self.events])

    def reply(self, *, cut: bool = False) -> StreamReply:
        return StreamReply(self.chunks(), cut=cut)


def usage(input_tokens: int, output_tokens: int, cached: int = 0) -> JSON:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def responses_answer(text: str, *, model: str = "gpt-4.1") -> StreamReply:
    words = text.split(" ")
    pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
    return ResponsesEvents(model).created().text(*pieces).completed().reply()


def raw_sse(*data: str) -> list[bytes]:
    """SSE events with the given raw `data:` text (for malformed JSON)."""
    return [f"data: {d}\n\n".encode() for d in data]


# --- windows ---------------------------------------------------------------------------------------------------

WEATHER = ToolSpec(
    "weather",
    "The weather in a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def ask(text: str, *, system_prompt: str | None = None, max_output_tokens: int | None = None) -> Window:
    """A window holding one user message."""
    return Window(system_prompt, None, max_output_tokens, [user(text)])


def tool_window() -> Window:
    """System prompt, a question, an assistant turn with a batch of two calls and their results (out of order),
    the assistant's answer and a follow-up; one tool; an output limit of 500."""
    calls = [
        ToolCall(call_id="c1", name="weather", arguments='{"city": "Paris"}', batch_id="b1", turn_id="t1"),
        ToolCall(call_id="c2", name="weather", arguments='{"city": "Rome"}', batch_id="b1", turn_id="t1"),
    ]
    items: list[Item] = [
        user("Weather in Paris and Rome?", turn_id="t1"),
        *calls,
        ToolResult(call_id="c2", output="sunny", turn_id="t1"),
        ToolResult(call_id="c1", output="rain", turn_id="t1"),
        assistant("Rain in Paris, sun in Rome.", turn_id="t1"),
        user("Thanks!", turn_id="t2"),
    ]
    return Window("Be brief.", [WEATHER], 500, items)
