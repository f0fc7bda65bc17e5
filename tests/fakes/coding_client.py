"""`CodingClient`: a scripted coding-agent client that resends its whole history on every request, as real ones do.

    async with CodingClient(proxy_url, ClientOptions(requests=200, wire="anthropic")) as client:
        run = await client.run()
    run.answer == f"The deploy code is {run.fact}."

It talks through the real SDKs (`openai.AsyncOpenAI` chat completions, `anthropic.AsyncAnthropic` messages),
streamed or not, to any root URL: the proxy, or the upstream directly. Its script: a system prompt and two tools
(`read_file`, `run_tests`); request 1 starts task 1; each tool call the model makes is run here, with a
deterministic 1-8 KB output (a numbered source listing, a pytest log) from a seeded RNG; when the model says a task
is done the next user message starts the next one, sized so the last task ends before the last request; request 3
plants the fact ("the deploy code is <code>", in the middle of a tool output, or in the user message if request 3
starts a task); the last request asks "question: what is the deploy code?". So a run makes exactly `requests`
requests, whatever the model answers.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, cast

from anthropic import AsyncAnthropic
from anthropic.types import (
    InputJSONDelta,
    Message,
    MessageParam,
    RawContentBlockDeltaEvent,
    RawContentBlockStartEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    TextBlock,
    TextDelta,
    ToolParam,
    ToolUseBlock,
)
from openai import AsyncOpenAI, omit
from openai.types.chat import ChatCompletion, ChatCompletionToolParam

from .coding_model import FACT_NAME
from .coding_outputs import fact_code, task_text, tool_output
from .coding_wire import Wire, count_tokens

JSON = dict[str, Any]
SYSTEM_PROMPT = (
    "You are a careful coding agent working in a Python repository. Work on one task at a time: read the module, "
    "run its tests, fix what fails, then say the task is done. Use the tools; never guess a file's content."
)
QUESTION = f"question: what is the {FACT_NAME}?"
_PATH = {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}
TOOLS: tuple[tuple[str, str], ...] = (
    ("read_file", "Read a file of the repository, with line numbers."),
    ("run_tests", "Run the tests in a file or directory with pytest and show the log."),
)


@dataclass(frozen=True, slots=True)
class ClientOptions:
    requests: int = 200
    seed: int = 0
    wire: Wire = "openai-chat"
    stream: bool = True
    model: str = "fake-coder"
    max_tokens: int = 1024
    headers: Mapping[str, str] = field(default_factory=dict)
    """Sent on every request (besides the SDK's auth header for `api_key`)."""
    output_bytes: tuple[int, int] = (1024, 8192)
    """The size range of a tool output, in characters."""
    api_key: str = "sk-coding-client"


@dataclass(frozen=True, slots=True)
class MadeCall:
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request of the script: what the client sent and what it got back."""

    number: int
    """1-based."""
    body: JSON
    """What was sent (model, max_tokens, system, tools and the whole history as `messages`), as plain JSON."""
    new_messages: int
    """How many messages this request added to the history."""
    text: str
    calls: tuple[MadeCall, ...]
    stop_reason: str | None
    input_tokens: int | None
    output_tokens: int | None
    headers: Mapping[str, str]
    """The response's headers, names lower-cased."""
    text_deltas: int
    """Text pieces received (0 when not streamed)."""
    full_tokens: int
    """The upstream's count of `body`: what forwarding the full history costs (`full_history_tokens`)."""

    @property
    def conversation(self) -> str | None:
        return self.headers.get("x-contextfold-conversation")


@dataclass(frozen=True, slots=True)
class Run:
    exchanges: tuple[Exchange, ...]
    answer: str
    """The text of the last answer (to the question)."""
    fact: str


def full_history_tokens(exchanges: Sequence[Exchange]) -> int:
    """What the upstream would have counted had every request carried the client's full history."""
    return sum(exchange.full_tokens for exchange in exchanges)


@dataclass(slots=True)
class _Reply:
    text: str = ""
    calls: list[MadeCall] = field(default_factory=list)
    stop_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    text_deltas: int = 0


class CodingClient:
    def __init__(
        self, base_url: str, options: ClientOptions | None = None, *, on_text: Callable[[str], None] | None = None
    ) -> None:
        """`base_url` is the server's root (`http://host:port`); `on_text` sees every streamed text delta."""
        self.options = options or ClientOptions()
        if self.options.requests < 2:
            raise ValueError("the script needs at least 2 requests: a task, then the question")
        self.on_text = on_text
        self._rng = random.Random(self.options.seed)
        self.fact = fact_code(self._rng)
        self.fact_name = FACT_NAME
        self.plant_at = min(3, self.options.requests - 1)
        self.history: list[JSON] = []
        self.exchanges: list[Exchange] = []
        self._task = 0
        self._last: _Reply | None = None
        self._pending: list[JSON] | None = None
        root = base_url.rstrip("/")
        headers = dict(self.options.headers)
        self._openai: AsyncOpenAI | None = None
        self._anthropic: AsyncAnthropic | None = None
        if self.options.wire == "openai-chat":
            self._openai = AsyncOpenAI(
                api_key=self.options.api_key, base_url=root + "/v1", max_retries=0, default_headers=headers
            )
        else:
            self._anthropic = AsyncAnthropic(
                api_key=self.options.api_key, base_url=root, max_retries=0, default_headers=headers
            )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._openai is not None:
            await self._openai.close()
        if self._anthropic is not None:
            await self._anthropic.close()

    @property
    def done(self) -> bool:
        return len(self.exchanges) >= self.options.requests

    async def run(self) -> Run:
        """Every remaining request of the script, in order."""
        while not self.done:
            await self.step()
        return Run(tuple(self.exchanges), self.exchanges[-1].text, self.fact)

    async def step(self) -> Exchange:
        """The next request: add its new messages to the history, send the whole history, keep the answer."""
        if self.done:
            raise RuntimeError(f"the script's {self.options.requests} requests are all made")
        number = len(self.exchanges) + 1
        # Made once per request: a step that failed (the SDK raised) sends the same messages when called again.
        new = self._pending = self._pending if self._pending is not None else self._new_messages(number)
        body = self._body([*self.history, *new])
        reply = await (self._send_chat(body) if self._openai is not None else self._send_anthropic(body))
        self.history += [*new, self._assistant(reply)]
        self._pending, self._last = None, reply
        exchange = Exchange(
            number,
            body,
            len(new),
            reply.text,
            tuple(reply.calls),
            reply.stop_reason,
            reply.input_tokens,
            reply.output_tokens,
            reply.headers,
            reply.text_deltas,
            count_tokens(self.options.wire, body),
        )
        self.exchanges.append(exchange)
        return exchange

    # --- the script ----------------------------------------------------------------------------------------------

    def _new_messages(self, number: int) -> list[JSON]:
        """Results of the calls the model just made, then (when it is time) a user message: a task or the question."""
        results = [(call.call_id, self._run_tool(call)) for call in (self._last.calls if self._last else [])]
        text: str | None = None
        if number == self.options.requests:
            text = QUESTION
        elif not results:
            text = self._next_task(number)
        if number == self.plant_at:
            sentence = f"the {FACT_NAME} is {self.fact}"
            if results:
                call_id, output = results[0]
                lines = output.split("\n")
                lines.insert(len(lines) // 2, f"NOTE: {sentence}.")
                results[0] = (call_id, "\n".join(lines))
            elif text is not None:
                text += f" (For the release notes: {sentence}.)"
        if self.options.wire == "openai-chat":
            out: list[JSON] = [{"role": "tool", "tool_call_id": i, "content": output} for i, output in results]
            return out + ([{"role": "user", "content": text}] if text is not None else [])
        blocks: list[JSON] = [{"type": "tool_result", "tool_use_id": i, "content": output} for i, output in results]
        if text is not None:
            blocks.append({"type": "text", "text": text})
        return [{"role": "user", "content": blocks}]

    def _next_task(self, number: int) -> str:
        self._task += 1
        steps = self._rng.randint(1, 4)
        if self._task == 1:
            steps = max(steps, 2)  # requests 2 and 3 then carry tool results, and the fact lands in a tool output
        steps = max(0, min(steps, self.options.requests - 1 - number))  # the task ends before the question
        return task_text(self._rng, self._task, steps)

    def _run_tool(self, call: MadeCall) -> str:
        low, high = self.options.output_bytes
        return tool_output(self._rng, call.name, call.arguments, self._rng.randint(low, high))

    # --- wires ---------------------------------------------------------------------------------------------------

    def _body(self, history: list[JSON]) -> JSON:
        options = self.options
        body: JSON = {"model": options.model, "max_tokens": options.max_tokens}
        if options.wire == "openai-chat":
            tools = [
                {"type": "function", "function": {"name": n, "description": d, "parameters": _PATH}} for n, d in TOOLS
            ]
            messages = [{"role": "system", "content": SYSTEM_PROMPT}, *history]
            return {**body, "messages": messages, "tools": tools}
        tools = [{"name": n, "description": d, "input_schema": _PATH} for n, d in TOOLS]
        return {**body, "system": SYSTEM_PROMPT, "messages": history, "tools": tools}

    def _assistant(self, reply: _Reply) -> JSON:
        """The answer as the client sends it back next time."""
        if self.options.wire == "openai-chat":
            message: JSON = {"role": "assistant", "content": reply.text or None}
            if reply.calls:
                message["tool_calls"] = [
                    {"id": c.call_id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                    for c in reply.calls
                ]
            return message
        content: list[JSON] = [{"type": "text", "text": reply.text}] if reply.text else []
        for call in reply.calls:
            content.append(
                {"type": "tool_use", "id": call.call_id, "name": call.name, "input": _object(call.arguments)}
            )
        return {"role": "assistant", "content": content}

    async def _send_chat(self, body: JSON) -> _Reply:
        assert self._openai is not None
        stream = self.options.stream
        raw = await self._openai.chat.completions.with_raw_response.create(
            model=body["model"],
            # The history is plain JSON in the wire shape already. Through `extra_body` (merged over the SDK's own
            # fields, in the same place, so the bytes sent are the same) it skips the SDK's recursive TypedDict
            # transform, which costs ~90 ms a request at 300 messages and would make a 200-request run take 15 s.
            messages=[],
            tools=cast("list[ChatCompletionToolParam]", body["tools"]),
            extra_body={"messages": body["messages"]},
            max_tokens=body["max_tokens"],
            stream=stream,
            stream_options={"include_usage": True} if stream else omit,
        )
        reply = _Reply(headers={k.lower(): v for k, v in raw.headers.items()})
        parsed = raw.parse()
        if isinstance(parsed, ChatCompletion):
            choice = parsed.choices[0]
            reply.text = choice.message.content or ""
            reply.calls = [
                MadeCall(c.id, c.function.name, c.function.arguments)
                for c in choice.message.tool_calls or []
                if c.type == "function"
            ]
            reply.stop_reason = choice.finish_reason
            if parsed.usage is not None:
                reply.input_tokens, reply.output_tokens = parsed.usage.prompt_tokens, parsed.usage.completion_tokens
            return reply
        calls: dict[int, list[str]] = {}
        async with parsed as chunks:
            async for chunk in chunks:
                if chunk.usage is not None:
                    reply.input_tokens, reply.output_tokens = chunk.usage.prompt_tokens, chunk.usage.completion_tokens
                for part in chunk.choices:
                    if part.delta.content:
                        self._delta(reply, part.delta.content)
                    for call in part.delta.tool_calls or []:
                        entry = calls.setdefault(call.index, ["", "", ""])
                        entry[0] = call.id or entry[0]
                        if call.function is not None:
                            entry[1] = call.function.name or entry[1]
                            entry[2] += call.function.arguments or ""
                    reply.stop_reason = part.finish_reason or reply.stop_reason
        reply.calls = [MadeCall(*calls[index]) for index in sorted(calls)]
        return reply

    async def _send_anthropic(self, body: JSON) -> _Reply:
        assert self._anthropic is not None
        raw = await self._anthropic.messages.with_raw_response.create(
            model=body["model"],
            max_tokens=body["max_tokens"],
            system=body["system"],
            messages=cast("list[MessageParam]", body["messages"]),
            tools=cast("list[ToolParam]", body["tools"]),
            stream=self.options.stream,
        )
        reply = _Reply(headers={k.lower(): v for k, v in raw.headers.items()})
        parsed = await raw.parse()
        if isinstance(parsed, Message):
            reply.text = "".join(block.text for block in parsed.content if isinstance(block, TextBlock))
            reply.calls = [
                MadeCall(b.id, b.name, json.dumps(b.input)) for b in parsed.content if isinstance(b, ToolUseBlock)
            ]
            reply.stop_reason = parsed.stop_reason
            reply.input_tokens, reply.output_tokens = parsed.usage.input_tokens, parsed.usage.output_tokens
            return reply
        calls: dict[int, list[str]] = {}
        async with parsed as events:
            async for event in events:
                if isinstance(event, RawMessageStartEvent):
                    reply.input_tokens = event.message.usage.input_tokens
                elif isinstance(event, RawContentBlockStartEvent):
                    block = event.content_block
                    if isinstance(block, ToolUseBlock):
                        calls[event.index] = [block.id, block.name, ""]
                    elif isinstance(block, TextBlock) and block.text:
                        self._delta(reply, block.text)
                elif isinstance(event, RawContentBlockDeltaEvent):
                    if isinstance(event.delta, TextDelta):
                        self._delta(reply, event.delta.text)
                    elif isinstance(event.delta, InputJSONDelta) and event.index in calls:
                        calls[event.index][2] += event.delta.partial_json
                elif isinstance(event, RawMessageDeltaEvent):
                    reply.stop_reason = event.delta.stop_reason or reply.stop_reason
                    reply.output_tokens = event.usage.output_tokens
        reply.calls = [MadeCall(*calls[index]) for index in sorted(calls)]
        return reply

    def _delta(self, reply: _Reply, text: str) -> None:
        reply.text += text
        reply.text_deltas += 1
        if self.on_text is not None:
            self.on_text(text)


def _object(arguments: str) -> Any:
    """Tool-call arguments as the JSON object Anthropic's `input` wants (`{}` for none)."""
    return json.loads(arguments) if arguments.strip() else {}
