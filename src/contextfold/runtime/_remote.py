"""The agent API against a remote `contextfold serve`: a thin client over its Responses + Conversations API.

    agent = RemoteAgent("http://127.0.0.1:8400", instructions="You are a careful coding agent.", tools=[read_file])
    session = await agent.create_session()          # a conversation on the server
    result = await session.turn("Why does the build fail?")
    async for event in session.stream("Fix it."):   # the same TurnEvent types an in-process turn yields
        ...

The conversation, its compaction and recall live on the server; the client keeps no history. Client tools run
here: a response that ends with function calls is answered by running them and sending a new response with their
`function_call_output` items, until the model answers without calls (or `max_steps` responses). `interrupt()`
cancels the turn: the open stream is closed, which the server sees and marks the turn interrupted; calls left
unanswered are answered as interrupted with the next turn's input, so the conversation can go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncGenerator, Sequence
from typing import Any, cast

import httpx2
import openai
from openai import AsyncStream
from openai.types.responses import ResponseInputParam, ResponseStreamEvent

from .._errors import (
    BusyError,
    InvalidRequestError,
    ModelError,
)
from ..compaction import CompactionResult
from ..events import Part, TextPart, TokenUsage, new_id
from ._agent import AgentOptions, tool_registry
from ._events import (
    StepCompleted,
    StepProgress,
    StepStarted,
    ToolCallCompletedDelta,
    ToolExecutionResult,
    ToolOutcome,
    TurnCompleted,
    TurnError,
    TurnEvent,
    TurnFailed,
    TurnStarted,
)
from ._lifecycle import cancel_turn, relay
from ._remote_errors import json_of, translated
from ._remote_events import CompactionDone, ResponseTranslator
from ._session import SessionStatus, TurnResult, result_of
from ._tools import Tool, ToolLike

_INTERRUPTED = "interrupted by the caller"
_NOT_RUN = "not run: the turn was interrupted before this call's result was sent"
_MAX_STEPS = "not run: the turn reached max_steps"
_TIMEOUT = httpx2.Timeout(600.0, connect=10.0)  # a compaction with a real summariser can take minutes
_SERVER_SIDE = ("context_window", "policy", "summariser", "compactor", "expand_tokens")
"""AgentOptions that belong to the server for a remote agent: its configuration (or `context_management`) sets them."""


class RemoteAgent:
    """An `Agent` whose sessions are conversations on a remote server. `aclose()` (or `async with`) releases its
    connections. `model` is a model name the server serves (default: the server's default model)."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        model: str | None = None,
        instructions: str | None = None,
        tools: Sequence[ToolLike] = (),
        options: AgentOptions | None = None,
        context_management: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        self.options = options or AgentOptions()
        defaults = AgentOptions()
        moved = [name for name in _SERVER_SIDE if getattr(self.options, name) != getattr(defaults, name)]
        if moved:
            raise InvalidRequestError(
                f"agent option(s) {', '.join(moved)} are the server's for a remote agent: set them in the server's "
                "configuration, or per request with context_management=[{'type': 'compaction', ...}]"
            )
        self.url = url.rstrip("/").removesuffix("/v1")
        self.model = model
        self.instructions = instructions
        self.tools = tool_registry(tools)
        self.context_management = list(context_management) if context_management else None
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx2.AsyncClient(base_url=f"{self.url}/v1", headers=headers, timeout=_TIMEOUT)
        # The SDK insists on a key; a loopback server without keys ignores this placeholder. No retries: a turn
        # is not idempotent, and a 409 (busy) is the caller's to decide on.
        self.client = openai.AsyncOpenAI(
            base_url=f"{self.url}/v1", api_key=api_key or "unused", max_retries=0, timeout=_TIMEOUT.read
        )

    async def __aenter__(self) -> RemoteAgent:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.client.close()
        await self.http.aclose()

    async def create_session(
        self, *, session_id: str | None = None, metadata: dict[str, str] | None = None
    ) -> RemoteSession:
        """A new session: a conversation on the server (the server names it; `session_id` cannot be chosen)."""
        if session_id is not None:
            raise InvalidRequestError("a remote session's id is the server's conversation id; leave session_id unset")
        async with translated(self.url):
            conversation = await self.client.conversations.create(metadata=metadata or openai.omit)
        return RemoteSession(self, conversation.id, conversation.created_at)

    async def session(self, session_id: str) -> RemoteSession:
        """Resume a session: the server's conversation `session_id` (a 404 raises `NotFoundError`)."""
        async with translated(self.url):
            conversation = await self.client.conversations.retrieve(session_id)
        return RemoteSession(self, conversation.id, conversation.created_at)


class RemoteSession:
    """One conversation on the server, with the turns and controls of `Session` (one turn at a time)."""

    def __init__(self, agent: RemoteAgent, conversation_id: str, created_at: float) -> None:
        self.agent = agent
        self.id = conversation_id
        self.created_at = created_at
        self.tools: dict[str, Tool] = dict(agent.tools)
        self.instructions = agent.instructions
        self.max_output_tokens = agent.options.max_output_tokens
        self.unanswered: dict[str, str] = {}
        """Call id -> the output to send for it: calls the model made that a cut-off turn left without a result."""
        self._task: asyncio.Task[None] | None = None

    # --- turns ----------------------------------------------------------------------------------------------------

    async def stream(self, content: str | Sequence[Part]) -> AsyncGenerator[TurnEvent, None]:
        """Run a turn, yielding its events as they happen; closing the stream early interrupts it."""
        text = _text(content)
        if self.running:
            raise BusyError(f"session {self.id!r} is running a turn; wait for it or interrupt() it to start a turn")
        turn_id = new_id("turn")
        queue: asyncio.Queue[TurnEvent | None] = asyncio.Queue()
        task = asyncio.create_task(self._drive(turn_id, text, queue), name=f"remote turn {turn_id}")
        self._task = task
        async with contextlib.aclosing(relay(task, queue)) as events:
            async for event in events:
                yield event

    async def turn(self, content: str | Sequence[Part]) -> TurnResult:
        """Run a turn to its end; a failed turn raises the error it failed with."""
        return await result_of(self.id, self.stream(content))

    async def interrupt(self) -> bool:
        """Cancel the running turn (the server marks it interrupted). Returns whether a turn was running."""
        return await cancel_turn(self._task)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _drive(self, turn_id: str, text: str, queue: asyncio.Queue[TurnEvent | None]) -> None:
        try:
            await self._run(turn_id, text, queue.put_nowait)
        except asyncio.CancelledError:
            queue.put_nowait(TurnFailed(turn_id, TurnError("interrupted", _INTERRUPTED)))
        except Exception as exc:
            queue.put_nowait(TurnFailed(turn_id, TurnError(type(exc).__name__, str(exc)), exception=exc))
        finally:
            queue.put_nowait(None)

    async def _run(self, turn_id: str, text: str, emit: Any) -> None:
        emit(TurnStarted(turn_id, self.id))
        items: list[dict[str, Any]] = [
            {"type": "function_call_output", "call_id": call_id, "output": output}
            for call_id, output in self.unanswered.items()
        ]
        items.append({"role": "user", "content": text})
        steps, used, responses = 0, TokenUsage(), 0
        final = ""
        while True:
            responses += 1
            read = ResponseTranslator(turn_id, self.agent.model)
            async with translated(self.agent.url):
                stream = cast(
                    "AsyncStream[ResponseStreamEvent]",
                    await self.agent.client.responses.create(
                        input=cast("ResponseInputParam", items), stream=True, **self._request()
                    ),
                )
            self.unanswered = {}  # the server took their outputs
            async with stream:  # leaving it (a cancel) closes the connection: the server marks the turn interrupted
                async for event in stream:
                    for out in read.feed(event):
                        emit(await self._compaction_figures(out) if isinstance(out, CompactionDone) else out)
            steps += read.steps
            used = TokenUsage(
                used.input_tokens + read.usage.input_tokens, used.output_tokens + read.usage.output_tokens
            )
            final = read.texts[-1] if read.texts else final
            failure = read.error
            if failure is not None or read.status is None:
                code, message = failure or ("server_error", "the response stream ended before the response did")
                emit(TurnFailed(turn_id, TurnError(code, message), exception=ModelError(f"{message} ({code})")))
                return
            calls = read.function_calls
            if not calls:
                reason = read.incomplete_reason if read.status == "incomplete" else None
                emit(TurnCompleted(turn_id, final, steps, used, reason))
                return
            if responses >= self.agent.options.max_steps:
                self.unanswered = {c.call_id: _MAX_STEPS for c in calls}
                emit(TurnCompleted(turn_id, final, steps, used, "max_steps", calls))
                return
            self.unanswered = {c.call_id: _NOT_RUN for c in calls}
            steps += 1
            step_id = new_id("step")
            meta = {"server_side": False, "tools": [c.name for c in calls]}
            emit(StepStarted(step_id, "tool_execution", turn_id, meta))
            outcomes = await self._run_tools(step_id, calls, emit)
            emit(StepCompleted(step_id, "tool_execution", ToolExecutionResult(calls, outcomes)))
            items = [{"type": "function_call_output", "call_id": o.call_id, "output": o.output} for o in outcomes]

    async def _run_tools(self, step_id: str, calls: Sequence[Any], emit: Any) -> list[ToolOutcome]:
        """Run one batch's calls in parallel, reporting each result as it lands; the results in call order."""

        async def run(call: Any) -> ToolOutcome:
            found = self.tools.get(call.name)
            if found is None:
                known = ", ".join(sorted(self.tools)) or "none"
                return ToolOutcome(call.call_id, call.name, f"unknown tool {call.name!r}; available: {known}", True)
            return await found.run(call, time_limit=self.agent.options.tool_timeout)

        tasks = [asyncio.ensure_future(run(call)) for call in calls]
        done: dict[str, ToolOutcome] = {}
        try:
            for finished in asyncio.as_completed(tasks):
                outcome = await finished
                done[outcome.call_id] = outcome
                delta = ToolCallCompletedDelta(outcome.call_id, outcome.tool_name, outcome.output, outcome.is_error)
                emit(StepProgress(step_id, delta))
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks, return_exceptions=True)
        return [done[c.call_id] for c in calls]

    def _request(self) -> dict[str, Any]:
        agent, omit = self.agent, openai.omit
        tools = [
            {"type": "function", "name": t.name, "description": t.spec.description, "parameters": t.spec.parameters}
            for t in self.tools.values()
        ]
        return {
            "conversation": self.id,
            "model": agent.model or omit,
            "instructions": self.instructions or omit,
            "tools": tools or omit,
            "max_output_tokens": self.max_output_tokens or omit,
            "temperature": agent.options.temperature if agent.options.temperature is not None else omit,
            "extra_body": {"context_management": agent.context_management} if agent.context_management else None,
        }

    async def _compaction_figures(self, done: CompactionDone) -> StepCompleted:
        """The compaction step's result, from the server's record of the compaction the stream just announced."""
        latest = (await self._get(f"/conversations/{self.id}/context")).get("latest_compaction") or {}
        found = latest.get("id") == done.compaction_id
        result = CompactionResult(
            compacted=True,
            trigger=str(latest.get("trigger", "auto")) if found else "auto",
            messages_before=0,
            messages_after=0,
            turns_before=0,
            turns_after=0,
            tokens_before=int(latest.get("tokens_before", 0)) if found else 0,
            tokens_after=int(latest.get("tokens_after", 0)) if found else 0,
            strategy=latest.get("strategy") if found else None,
            compaction_id=done.compaction_id,
            error=latest.get("error") if found else None,
        )
        return StepCompleted(done.step_id, "compaction", result)

    # --- controls -------------------------------------------------------------------------------------------------

    def _ensure_idle(self, action: str) -> None:
        if self.running:
            raise BusyError(f"session {self.id!r} is running a turn; wait for it or interrupt() it to {action}")

    async def set_system_prompt(self, prompt: str | None) -> None:
        """Replace (or with None, clear) the instructions sent with the next request on."""
        self._ensure_idle("change the system prompt")
        self.instructions = prompt

    async def set_max_output_tokens(self, tokens: int | None) -> None:
        if tokens is not None and tokens <= 0:
            raise InvalidRequestError(f"max output tokens must be a positive number of tokens, got {tokens}")
        self._ensure_idle("change max output tokens")
        self.max_output_tokens = tokens

    async def set_tools(self, tools: Sequence[ToolLike] | None) -> None:
        self._ensure_idle("change the tools")
        self.tools = tool_registry(tools or ())

    async def compact(self, instructions: str | None = None) -> CompactionResult:
        """Compact now on the server, optionally steering the summary with `instructions`."""
        self._ensure_idle("compact")
        body: dict[str, Any] = {"instructions": instructions} if instructions else {}
        if self.agent.model:
            body["model"] = self.agent.model
        done = await self._post(f"/conversations/{self.id}/compact", body)
        names = {f.name for f in dataclasses.fields(CompactionResult)}
        return CompactionResult(**{k: v for k, v in done.items() if k in names})

    async def context(self) -> dict[str, Any]:
        """The server's context report: the view by category against its budget, and the policy in force."""
        params = {"model": self.agent.model} if self.agent.model else {}
        return await self._get(f"/conversations/{self.id}/context", **params)

    async def status(self) -> SessionStatus:
        report = await self.context()
        totals = report["totals"]
        return SessionStatus(
            session_id=self.id,
            model=str(report["model"]),
            created_at=self.created_at,
            conversation_length=int(report["events"]),
            context_used=int(report["tokens"]["total"]),
            context_limit=int(report["budget"]),
            utilisation=float(report["utilisation"] or 0.0),
            input_tokens=int(totals["input_tokens"]),
            output_tokens=int(totals["output_tokens"]),
            cached_input_tokens=int(totals["cached_input_tokens"]),
            requests=int(totals["requests"]),
            compactions=int(totals["compactions"]),
            running=self.running,
        )

    async def _get(self, path: str, **params: str) -> dict[str, Any]:
        async with translated(self.agent.url):
            reply = await self.agent.http.get(path, params=params)
        return json_of(reply)

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with translated(self.agent.url):
            reply = await self.agent.http.post(path, json=body)
        return json_of(reply)


def _text(content: str | Sequence[Part]) -> str:
    """A remote turn's input as text (the server's Responses input is the message; parts other than text are
    not sent by this client)."""
    if isinstance(content, str):
        text = content
    else:
        others = [type(p).__name__ for p in content if not isinstance(p, TextPart)]
        if others:
            raise InvalidRequestError(f"a remote turn takes text parts only, got {', '.join(others)}")
        text = "\n".join(p.text for p in content if isinstance(p, TextPart))
    if not text.strip():
        raise InvalidRequestError("a turn needs input: the text is empty")
    return text
