"""The transparent compaction proxy: `POST /v1/chat/completions` (OpenAI) and `POST /v1/messages` (Anthropic).

    client (resends its whole history) -> match the stored conversation (`_proxy_match`) -> append the new messages
    -> run a turn on the compacted view -> the upstream's answer streamed back in the client's wire format

Clients that keep their own history are served without a change on their side: the proxy finds the conversation
(the `X-Contextfold-Conversation` header, else the longest stored prefix of the history), appends only what is new,
and the upstream receives the view (instructions, pinned head, summary, recent turns, the new input) rather than the
client's history. Between compactions that view only grows at its end, so upstream prompt caches keep hitting.
Recall and expand are offered to the model once something has been folded; the proxy runs them itself and the
client never sees those calls. Every answer names its conversation in the `X-Contextfold-Conversation` header.

Everything the request can get wrong is checked before anything is appended or any byte is sent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ..._conversation import Conversation
from ..._errors import (
    AuthenticationError,
    InvalidEventError,
    InvalidRequestError,
    ModelResponseError,
    NotFoundError,
    PayloadTooLargeError,
)
from ...compaction import CompactionResult
from ...events import ConfigChange, Event, Message, ToolCall, ToolResult
from ...runtime import (
    Emit,
    StepCompleted,
    TurnCompleted,
    TurnError,
    TurnEvent,
    TurnFailed,
    TurnRun,
    TurnSetup,
    turn_budget,
    turn_setup,
)
from ...store import TurnAnchors
from .._commit import commit_turn
from .._fork import fork
from .._registry import ResolvedModel
from .._state import TENANT_KEY_HEADER, ServerState, client_key, state_of, tenant_of
from ..edge._gone import gone, unless_gone
from ..responses._items import BUILTIN_TOOLS
from ._match_log import client_signatures, hold_match, overlap, stored_signatures, tail_holds
from ._proxy_match import History, find
from ._proxy_types import CHAT_BODY, MESSAGES_BODY, AnswerMapper, ProxyRequest, request_body

log = logging.getLogger("contextfold.server")

router = APIRouter(tags=["proxy"])
Tenant = Annotated[str, Depends(tenant_of)]
State = Annotated[ServerState, Depends(state_of)]

CONVERSATION_HEADER = "x-contextfold-conversation"
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
_INTERRUPTED = "the client went away before the answer was complete"
_MAX_STEPS = 20


@router.post("/v1/chat/completions", openapi_extra=request_body(CHAT_BODY))
async def chat_completions(request: Request, tenant: Tenant, state: State) -> Response:
    return await chat_turn(request, await request.body(), tenant, state)


async def chat_turn(request: Request, body: bytes, tenant: str, state: ServerState) -> Response:
    """`POST /v1/chat/completions` with its body read and its caller known (the app's edge, `edge._asgi`, calls
    this directly: FastAPI has nothing to validate on a route whose body msgspec decodes)."""
    from ._chat_decode import decode_chat
    from ._chat_wire import SSE_DONE, ChatAnswer, sse

    parsed = decode_chat(body)

    def mapper(hidden: frozenset[str]) -> AnswerMapper:
        chat_id = "chatcmpl-" + secrets.token_hex(12)
        return ChatAnswer(chat_id, parsed.model, int(time.time()), hidden, parsed.include_usage)

    return await _serve(request, state, tenant, parsed, mapper, sse, SSE_DONE)


@router.post("/v1/messages", openapi_extra=request_body(MESSAGES_BODY))
async def messages(request: Request, tenant: Tenant, state: State) -> Response:
    return await messages_turn(request, await request.body(), tenant, state)


async def messages_turn(request: Request, body: bytes, tenant: str, state: ServerState) -> Response:
    """`POST /v1/messages` with its body read and its caller known (see `chat_turn`)."""
    from ._messages_decode import decode_messages
    from ._messages_wire import MessagesAnswer, sse

    parsed = decode_messages(body)

    def mapper(hidden: frozenset[str]) -> AnswerMapper:
        return MessagesAnswer("msg_" + secrets.token_hex(12), parsed.model, hidden)

    return await _serve(request, state, tenant, parsed, mapper, sse, b"")


async def _serve(
    request: Request,
    state: ServerState,
    tenant: str,
    parsed: ProxyRequest,
    new_mapper: Callable[[frozenset[str]], AnswerMapper],
    sse: Callable[[dict[str, Any]], bytes],
    done: bytes,
) -> Response:
    turn = await ProxyTurn.start(state, tenant, parsed, request)
    mapper = new_mapper(turn.hidden)
    headers = {CONVERSATION_HEADER: turn.conversation.id}
    events = turn.run(mapper)
    if not parsed.stream:
        if await unless_gone(request, _drain(events)) is None:
            return gone()  # the client left: the turn was cancelled and marked interrupted
        if turn.failure is not None:
            raise turn.failure
        return JSONResponse(mapper.answer(), headers=headers)
    # Started here, not when the body is first read: a client gone before the first byte must not keep the
    # conversation held. The turn runs on its own task from the first event on. Nothing is sent before the first
    # output, so a turn that fails before it (the upstream refused, the view cannot fit) is a plain HTTP error.
    first = [await anext(events, None)]
    if turn.failure is not None:
        await events.aclose()
        raise turn.failure

    async def frames() -> AsyncIterator[bytes]:
        for event in first:
            if event is not None:
                yield sse(event)
        async for event in events:
            yield sse(event)
        if turn.failure is None and done:
            yield done

    return StreamingResponse(frames(), media_type="text/event-stream", headers={**_SSE_HEADERS, **headers})


async def _drain(events: AsyncIterator[dict[str, Any]]) -> bool:
    async for _ in events:
        pass
    return True


class ProxyTurn:
    """One proxied request: its conversation held from `start` until the turn's end."""

    def __init__(self, state: ServerState, history: History, setup: TurnSetup, given: list[Event]) -> None:
        self.state = state
        self.history = history
        self.setup = setup
        self.given = given
        self.exit = contextlib.AsyncExitStack()
        self.failure: BaseException | None = None

    @property
    def conversation(self) -> Conversation:
        return self.setup.conversation

    @property
    def hidden(self) -> frozenset[str]:
        return frozenset(tool.name for tool in self.setup.builtins)

    @classmethod
    async def start(cls, state: ServerState, tenant: str, request: ProxyRequest, http: Request) -> ProxyTurn:
        resolved = await state.registry.resolve(request.model)
        settings = dataclasses.replace(
            request.settings,
            extra=request.extra if request.extra and resolved.wire == request.wire else None,
            api_key=_forwarded_key(state, resolved, http),
        )
        reserved = resolved.reserved_output(request.max_output_tokens)
        budget = turn_budget(resolved.context_window, reserved, param="max_tokens")
        exit = contextlib.AsyncExitStack()
        try:
            history = History(request)
            client_tools = {spec.name for spec in request.tools or ()}
            hidden = frozenset(BUILTIN_TOOLS) - client_tools
            conversation, matched = await _hold(
                state, exit, tenant, history, http.headers.get(CONVERSATION_HEADER), resolved.name, hidden
            )
            new = request.messages[matched:]
            if len(new) > state.config.limits.max_items_per_request:
                raise PayloadTooLargeError(
                    f"{len(new)} new messages are over the limit of {state.config.limits.max_items_per_request} "
                    "per request",
                    param="messages",
                )
            given = [event for message in new for event in message.events]
            _check_new(conversation, given, state.config.limits.max_tool_output_bytes)
            setup = turn_setup(
                conversation,
                resolved.model,
                budget=budget,
                reserved=reserved,
                policy=resolved.policy,
                summariser=resolved.summariser,
                withheld=frozenset(client_tools),  # a client's own tool of that name wins; recall is then not offered
                context_window=resolved.context_window,
                max_steps=_MAX_STEPS,
                tool_timeout=state.config.tool_timeout,
                settings=resolved.bounded(settings),
                deferred=frozenset(client_tools),
            )
            changes = _config_changes(conversation, request)
        except BaseException:
            await exit.aclose()
            raise
        turn = cls(state, history, setup, [*changes, *given])
        turn.exit = exit
        return turn

    def run(self, mapper: AnswerMapper) -> AsyncGenerator[dict[str, Any], None]:
        """The answer's wire events; the turn runs on its own task, which a client that goes away cancels."""
        run = TurnRun(
            self.setup,
            self.given,
            _Answering(self, mapper),
            interrupted=_INTERRUPTED,
            lease=self.exit,
            after_turn=self.state.compactor.after_turn,
            name=f"proxy {self.conversation.id}",
            stage=True,  # the turn's writes, its anchors and the lease release in one commit (`_commit`)
        )
        return run.events()

    async def _commit(self, mapper: AnswerMapper | None) -> None:
        """Commit what the turn staged and give the lease back, with (given the answer's `mapper`) where the
        conversation stands for the history the client now holds, so its next request is matched. A failure
        writes nothing and is the client's error."""
        anchors = None
        if mapper is not None:
            anchors = TurnAnchors(self.conversation.view.head, self.history.anchors_after(mapper.answer_key()))
        await commit_turn(self.state.locks, self.conversation, anchors=anchors)

    def _observe(self, outcome: TurnEvent | None) -> None:
        metrics = self.state.metrics
        if isinstance(outcome, TurnCompleted):
            metrics.turns.labels("completed").inc()
            metrics.tokens.labels("input").inc(outcome.usage.input_tokens)
            metrics.tokens.labels("output").inc(outcome.usage.output_tokens)
        else:
            metrics.turns.labels("failed").inc()


class _Answering:
    """The proxy's caller of the lifecycle: turn events through the client's wire mapper. The opening events are
    held back until there is output, so a turn that fails before any sends only the error."""

    def __init__(self, turn: ProxyTurn, mapper: AnswerMapper) -> None:
        self.turn = turn
        self.mapper = mapper
        self.opening: list[dict[str, Any]] = []

    async def begin(self, emit: Emit[dict[str, Any]]) -> None:
        self.opening = self.mapper.start()

    async def event(self, turn_event: TurnEvent, emit: Emit[dict[str, Any]]) -> None:
        if isinstance(turn_event, StepCompleted) and isinstance(turn_event.result, CompactionResult):
            result = turn_event.result
            if result.compacted:
                self.turn.state.metrics.observe_compaction(
                    result.strategy or "", result.tokens_before, result.tokens_after
                )
        for event in self.mapper.map(turn_event):
            for held in self.opening:
                emit(held)
            self.opening = []
            emit(event)

    async def end(self, outcome: TurnCompleted | TurnFailed | None, emit: Emit[dict[str, Any]]) -> None:
        turn = self.turn
        await turn._commit(self.mapper if isinstance(outcome, TurnCompleted) else None)
        if not isinstance(outcome, TurnCompleted):
            turn.failure = _failure(outcome)
        turn._observe(outcome)
        closing = self.mapper.finish(outcome)
        for event in closing if turn.failure is not None else [*self.opening, *closing]:
            emit(event)

    def abandon(self, turn_id: str, error: Exception, emit: Emit[dict[str, Any]]) -> None:
        """The store failed under the turn: an error for the client, never a cut answer."""
        self.turn.failure = error
        failed = TurnFailed(turn_id, TurnError(type(error).__name__, str(error)), exception=error)
        for event in self.mapper.finish(failed):
            emit(event)

    async def interrupted(self, turn_id: str, emit: Emit[dict[str, Any]]) -> None:
        return None  # the client is gone: nothing to tell it


# --- helpers ------------------------------------------------------------------------------------------------------


def _forwarded_key(state: ServerState, resolved: ResolvedModel, http: Request) -> str | None:
    """The client's own key, for an upstream configured to receive it; never for any other upstream."""
    if resolved.auth != "forward":
        return None
    key = client_key(http)
    if not key:
        raise AuthenticationError(
            f"model {resolved.name!r} forwards your key to its upstream: send it as 'Authorization: Bearer <key>' "
            "(or 'x-api-key')"
        )
    if state.keys_required and not http.headers.get(TENANT_KEY_HEADER):
        # the header that carries the upstream key authenticated the tenant: never send a contextfold key upstream
        raise AuthenticationError(
            f"model {resolved.name!r} forwards your key to its upstream, so send your contextfold key as "
            "'X-Contextfold-Key: <key>' and the upstream's key as 'Authorization: Bearer <key>'"
        )
    return key


async def _hold(
    state: ServerState,
    exit: contextlib.AsyncExitStack,
    tenant: str,
    history: History,
    named: str | None,
    model: str,
    hidden: frozenset[str],
) -> tuple[Conversation, int]:
    """The conversation the request continues, held (released by `exit`), and how many of its messages it has.

    A conversation named by the header gets the same rules as one found by the history: the messages it already
    holds are not appended again, and a history that goes another way than its log (an edited or regenerated
    message) continues a fork of it. Anchors find the point when the proxy recorded them; otherwise (a conversation
    made through `/v1/responses`, or one the anchors do not cover) the history is compared with the log itself.
    """
    store = state.store
    request = history.request
    assert isinstance(request, ProxyRequest)
    source = {"source": str(request.wire)}
    if named:
        try:
            info = await store.conversations.get(named)
        except NotFoundError:
            info = None
        if info is None or info.tenant != tenant:
            raise NotFoundError(
                f"conversation {named!r} (from the {CONVERSATION_HEADER} header) not found; send the id of one "
                "of your conversations, or leave the header out to match the history",
                param=CONVERSATION_HEADER,
            )
        match = await find(store, tenant, history, only=named)
        if match is None or not match.by_chain:
            return await _hold_by_log(state, exit, tenant, history, named, model, hidden)
    else:
        match = await find(store, tenant, history)
        if match is not None and not match.by_chain and not await tail_holds(store, match, request.messages, hidden):
            match = None  # only the last messages are alike: another client's history, never spliced onto this one
    if match is None:
        info = await store.conversations.create(tenant=tenant, metadata=source)
        await exit.enter_async_context(state.locks.hold(info.id))
        return await state.views.current(info.id, model), 0
    return await hold_match(state, exit, tenant, match, model, source), match.matched


async def _hold_by_log(
    state: ServerState,
    exit: contextlib.AsyncExitStack,
    tenant: str,
    history: History,
    named: str,
    model: str,
    hidden: frozenset[str],
) -> tuple[Conversation, int]:
    """The named conversation (or a fork of it) and how many of the request's messages its log already holds."""
    await exit.enter_async_context(state.locks.hold(named))
    conversation = await state.views.current(named, model)
    request = history.request
    assert isinstance(request, ProxyRequest)
    messages = request.messages
    stored, _ = await stored_signatures(state.store, named, hidden=hidden)
    if not stored:
        return conversation, 0
    client = client_signatures([m.events for m in messages])
    found = overlap(stored, client, len(messages))
    if found.cut is None:
        return conversation, found.matched
    if found.matched == 0 and not any(m.role == "assistant" for m in messages):
        return conversation, 0  # only new messages, as a client that keeps no history sends them
    # The history goes another way than the log after `matched` messages (an edit, a regenerated answer, or
    # another history altogether): continue a copy of the log as it stood there.
    await exit.aclose()
    source = {"source": str(request.wire)}
    forked = await fork(state.store, named, found.cut, tenant=tenant, metadata=source)
    await exit.enter_async_context(state.locks.hold(forked))
    return await state.views.current(forked, model), found.matched


def _check_new(conversation: Conversation, given: Sequence[Event], max_output: int) -> None:
    """Every call in the view must be answered by the new messages, and every result must answer a call."""
    if not given:
        raise InvalidRequestError("the request has no new message after the history already stored", "messages")
    items = conversation.view.items.values()
    answered = {i.call_id for i in items if isinstance(i, ToolResult)}
    open_calls = [i.call_id for i in items if isinstance(i, ToolCall) and i.call_id not in answered]
    new_results = {e.call_id for e in given if isinstance(e, ToolResult)}
    missing = [call for call in open_calls if call not in new_results]
    if missing:
        raise InvalidRequestError(
            f"the tool call(s) {', '.join(missing)} of the last assistant message have no result; send one result "
            "for each call (a `tool` message, or a `tool_result` block) before anything else",
            param="messages",
        )
    known = set(open_calls) | {e.call_id for e in given if isinstance(e, ToolCall)}
    for event in given:
        if isinstance(event, ToolResult):
            if event.call_id not in known:
                raise InvalidRequestError(
                    f"a tool result answers call {event.call_id!r}, which no assistant message in the conversation "
                    "made; send results only for the calls of the last assistant message",
                    param="messages",
                )
            if len(event.output.encode()) > max_output:
                raise PayloadTooLargeError(
                    f"the result of call {event.call_id!r} is over the {max_output}-byte tool output limit; shorten it",
                    param="messages",
                )
    if not any(isinstance(e, (Message, ToolResult)) for e in given):
        raise InvalidRequestError("the new messages hold nothing for the model to answer", "messages")
    try:  # the conversation's own append check (a call id already in its view), naming the field
        conversation.check(given)
    except InvalidEventError as error:
        raise InvalidRequestError(str(error), param="messages") from None


def _config_changes(conversation: Conversation, request: ProxyRequest) -> list[Event]:
    """The instructions and tools the client sent, recorded when they differ from the view's."""
    view = conversation.view
    change: dict[str, Any] = {}
    if request.system_prompt != view.system_prompt:
        change["system_prompt"] = request.system_prompt
    tools = list(request.tools) if request.tools else None
    if tools != view.tools:
        change["tools"] = tools
    return [ConfigChange(**change)] if change else []


def _failure(outcome: TurnEvent | None) -> BaseException:
    if isinstance(outcome, TurnFailed) and outcome.exception is not None:
        return outcome.exception
    message = outcome.error.message if isinstance(outcome, TurnFailed) else "the turn ended without an answer"
    return ModelResponseError(message)
