"""One response: resolve its conversation, hold it, append the input, run the turn, record the response.

    run = await ResponseRun.start(state, tenant, body)   # every 4xx is raised here, before any byte is sent
    async for event in run.events(): ...                 # OpenAI stream events; the last one carries the response

`start` does everything that can fail because of the request (model, input, conversation, busy, sizes) so that a
streamed request still gets a plain HTTP error for them. The turn itself runs in its own task: a client that goes
away cancels it, and the turn is then marked interrupted in the log (the response is `cancelled`). The conversation
is held from `start` until the turn's end, across processes (see `_locks`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any, Protocol

from ..._conversation import Conversation
from ..._errors import BusyError, InvalidEventError, InvalidRequestError, NotFoundError, PayloadTooLargeError
from ...compaction import CompactionResult
from ...events import (
    AnyEvent,
    Compaction,
    ConfigChange,
    Event,
    ToolResult,
    new_id,
)
from ...models import ModelSettings
from ...runtime import (
    Emit,
    StepCompleted,
    StepStarted,
    TurnCompleted,
    TurnEvent,
    TurnFailed,
    TurnRun,
    TurnSetup,
    turn_budget,
    turn_setup,
)
from ...store import ResponseRecord
from .._commit import commit_turn
from .._compaction import RequestPolicy, request_policy
from .._fork import fork
from .._registry import ResolvedModel
from .._state import ServerState
from ._guardrails import requested
from ._hosted import check_include, hosted_tools
from ._items import BUILTIN_TOOLS, conversation_item
from ._items_input import CompactionInput, ItemReference, parse_input
from ._mcp_hosted import answer_approvals, split_approvals
from ._objects import response_object, tool_dicts
from ._responses_history import STATELESS, ItemHistory, anchors_for, history_of, hold_stateless
from ._schemas import ResponseCreate, function_tools, tool_choice
from ._stream import StreamMapper

log = logging.getLogger("contextfold.server")
_INTERRUPTED = "the client went away before the response was complete"
_DEFAULT_MAX_STEPS = 20


class EventSink(Protocol):
    def add(self, event: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class ResponseRun:
    def __init__(self, state: ServerState, record: ResponseRecord, setup: TurnSetup, given: list[Event]) -> None:
        self.state = state
        self.record = record
        self.setup = setup
        self.given = given
        self.exit = contextlib.AsyncExitStack()
        self.mapper = StreamMapper(frozenset(BUILTIN_TOOLS))
        self.response: dict[str, Any] | None = None
        self.failure: BaseException | None = None
        """Why the turn failed, once it has: a non-streamed response answers with its HTTP error."""
        self.history: ItemHistory | None = None
        """A stateless request's history: once answered, its anchors (with the output) are recorded."""
        self.streaming = False
        self.sink: EventSink | None = None
        """Where a streamed run's events are also kept (for resuming), closed when the run ends however it ends."""
        self.cancelled_as: tuple[str, dict[str, Any]] = ("cancelled", {})
        """How a cancelled run is recorded: `cancelled`, or `failed` when the server stops under a background run."""
        self._ended = False
        """The final event is out."""
        self.run: TurnRun[dict[str, Any]] | None = None

    @property
    def conversation(self) -> Conversation:
        return self.setup.conversation

    # --- start ----------------------------------------------------------------------------------------------------

    @classmethod
    async def start(cls, state: ServerState, tenant: str, body: ResponseCreate) -> ResponseRun:
        limits = state.config.limits
        if body.conversation_id and body.previous_response_id:
            raise InvalidRequestError(
                "send either conversation or previous_response_id, not both: each names the history to continue",
                param="previous_response_id",
            )
        if body.input is None or body.input == [] or body.input == "":
            raise InvalidRequestError("input is required: a string or a list of items", param="input")
        if body.instructions and len(body.instructions.encode()) > limits.max_instructions_bytes:
            raise PayloadTooLargeError(
                f"instructions are over the {limits.max_instructions_bytes}-byte limit", param="instructions"
            )
        given_input, approvals = split_approvals(body.input)
        entries = parse_input(given_input, max_items=limits.max_items_per_request, answered=True)
        _check_outputs(entries, limits.max_tool_output_bytes)
        specs = function_tools(body.tools)
        choice = tool_choice(body.tool_choice, specs)
        include = check_include(body.include)
        resolved = await state.registry.resolve(body.model)
        route = next((r for r in state.config.routes if r.name == resolved.name), None)
        guard = state.guardrails.for_turn([*(route.guardrails if route else ()), *requested(body.guardrails)])

        conversation_id, previous = await _history(state, tenant, body)
        stateless = conversation_id is None  # the client keeps its own history: `input` is all of it
        history = history_of(body.input) if stateless else None
        created: str | None = None
        exit = contextlib.AsyncExitStack()
        try:
            conversation: Conversation | None = None
            if history is not None:
                conversation, matched = await hold_stateless(state, exit, tenant, history, resolved.name)
                if matched:  # only what is new is appended; the rest is in the log already
                    assert isinstance(body.input, list)
                    new_items = split_approvals(body.input[matched:])[0]  # the approvals are answered below
                    entries = parse_input(new_items, max_items=limits.max_items_per_request)
            if conversation is None:
                if conversation_id is None:
                    kept = {STATELESS: "stored" if body.store else "hidden"}
                    conversation_id = created = (
                        await state.store.conversations.create(tenant=tenant, metadata=kept)
                    ).id
                conversation = await _hold(state, exit, conversation_id, previous, tenant, resolved.name)
            conversation_id = conversation.id
            hosted = await hosted_tools(state, tenant, body.tools, conversation_id)
            entries = [*await answer_approvals(conversation, approvals, hosted.tools), *entries]
            # every check before anything is appended: a refused request leaves the conversation as it was
            _check_answered(conversation, [e for e in entries if isinstance(e, Event)])
            try:  # the conversation's own append check (a call id already in its view), naming the field
                conversation.check([e for e in entries if isinstance(e, Event)])
            except InvalidEventError as error:
                raise InvalidRequestError(str(error), param="input") from None
            reserved = resolved.reserved_output(body.max_output_tokens)
            budget = turn_budget(resolved.context_window, reserved, param="max_output_tokens")
            policy = _policy(resolved, body, budget)
            given = await _prepare_input(conversation, entries)
            changes = _config_changes(conversation, body.instructions, specs)
            setup = turn_setup(
                conversation,
                resolved.model,
                budget=budget,
                reserved=reserved,
                policy=policy.policy,
                summariser=resolved.summariser_for(policy.deterministic),
                hosted=hosted.tools,
                context_window=resolved.context_window,
                max_steps=(body.max_tool_calls + 1) if body.max_tool_calls else _DEFAULT_MAX_STEPS,
                tool_timeout=state.config.tool_timeout,
                settings=resolved.bounded(
                    ModelSettings(
                        temperature=body.temperature,
                        top_p=body.top_p,
                        tool_choice=choice,
                        parallel_tool_calls=body.parallel_tool_calls,
                    )
                ),
                compact=body.truncation != "disabled",
                deferred=frozenset(s.name for s in specs or ()) | hosted.approvals,
                guard=guard,
            )
            data = {
                "model": resolved.name,
                "instructions": body.instructions,
                "tools": [*tool_dicts(specs), *hosted.shown],
                "include": include,
                "mcp_listings": hosted.listings,
                "mcp_list_items": hosted.listed,
                "tool_choice": body.tool_choice if isinstance(body.tool_choice, (str, dict)) else "auto",
                "parallel_tool_calls": body.parallel_tool_calls if body.parallel_tool_calls is not None else True,
                "temperature": body.temperature,
                "top_p": body.top_p,
                "max_output_tokens": body.max_output_tokens,
                "max_tool_calls": body.max_tool_calls,
                "metadata": body.metadata or {},
                "truncation": body.truncation or "auto",
                "store": body.store,
                "user": body.user,
                "conversation_visible": not stateless or body.store,
            }
            record = ResponseRecord(
                id=new_id("resp"),
                tenant=tenant,
                conversation_id=conversation_id,
                created_at=time.time(),
                status="in_progress",
                first_seq=conversation.head + 1,
                last_seq=0,
                previous_response_id=previous.id if previous else None,
                data=data,
            )
        except BaseException:
            await exit.aclose()
            if created:
                await state.store.conversations.delete(created)
            raise
        run = cls(state, record, setup, [*changes, *given])
        run.exit = exit
        run.history = history
        run.streaming = body.stream or bool(body.background)  # both are readable while they run
        run.mapper.include = frozenset(include)
        run.mapper.approvals = frozenset(setup.deferred & hosted.approvals)
        run.mapper.listing = list(hosted.listed)
        return run

    # --- running --------------------------------------------------------------------------------------------------

    def events(self) -> AsyncGenerator[dict[str, Any], None]:
        """The response's stream events, from `response.created` to its final event."""
        run = TurnRun(
            self.setup,
            self.given,
            self,
            interrupted=_INTERRUPTED,
            lease=self.exit,
            after_turn=self.state.compactor.after_turn,
            on_close=self._closed,
            name=f"response {self.record.id}",
            stage=True,  # the turn's writes, its record and the lease release in one commit (`_record`)
        )
        self.run = run
        return run.events()

    # --- the lifecycle's caller (`runtime.TurnCaller`) -----------------------------------------------------------

    async def begin(self, emit: Emit[dict[str, Any]]) -> None:
        if self.record.data["store"] and self.streaming:  # a stream's response is readable while it runs
            await self.state.store.responses.put(self.record)
        for event in self.mapper.start(response_object(self.record, [])):
            self._emit(emit, event)
        self.record = dataclasses.replace(self.record, data={**self.record.data, "output_seq": 0})

    async def event(self, turn_event: TurnEvent, emit: Emit[dict[str, Any]]) -> None:
        conversation = self.conversation
        if not self.record.data["output_seq"] and conversation.view.head >= self.record.first_seq:
            # the turn's input is stored: everything after it is output
            output_seq = conversation.view.head + 1
            self.record = dataclasses.replace(self.record, data={**self.record.data, "output_seq": output_seq})
            if self.record.data["store"] and self.streaming:
                # readable while it runs: a retrieve (or input_items) must know where its output starts, and find
                # the input stored
                if self.run is not None and self.conversation.staging:
                    await self.run.flush(response=self.record)
                else:
                    await self.state.store.responses.put(self.record)
        for event in await self._map(turn_event):
            self._emit(emit, event)

    async def end(self, outcome: TurnCompleted | TurnFailed | None, emit: Emit[dict[str, Any]]) -> None:
        await self._finish(outcome, emit)

    async def interrupted(self, turn_id: str, emit: Emit[dict[str, Any]]) -> None:
        """A cancelled turn's response is cancelled, whose final event ends the kept stream for whoever resumes."""
        status, data = self.cancelled_as
        await self._record(status, {"completed_at": time.time(), **data})
        assert self.response is not None
        for event in self.mapper.finish(self.response):
            self._emit(emit, event)

    def _closed(self) -> None:
        if self.sink is not None:
            self.sink.close()

    def _emit(self, emit: Emit[dict[str, Any]], event: dict[str, Any]) -> None:
        emit(event)
        if self.sink is not None:
            self.sink.add(event)

    async def _map(self, event: TurnEvent) -> list[dict[str, Any]]:
        if isinstance(event, StepStarted) and event.step_type == "compaction":
            return self.mapper.compaction_started(event)
        if isinstance(event, StepCompleted) and isinstance(event.result, CompactionResult):
            result = event.result
            if not result.compacted or not result.compaction_id:
                return []
            self.state.metrics.observe_compaction(result.strategy or "", result.tokens_before, result.tokens_after)
            compaction_id = result.compaction_id
            found = [e for e in self._turn_events(0) if e.id == compaction_id]
            if not found:  # not this turn's (or not in memory): the store has it
                found = await self.state.store.read(self.conversation.id, ids=[compaction_id])
            item = conversation_item(found[0]) if found else None
            return self.mapper.compaction_item(item) if item else []
        return self.mapper.map(event)

    async def _finish(self, outcome: TurnEvent | None, emit: Emit[dict[str, Any]]) -> None:
        data: dict[str, Any] = {"completed_at": time.time()}
        if isinstance(outcome, TurnCompleted):
            status = "incomplete" if outcome.incomplete_reason else "completed"
            if outcome.incomplete_reason:
                reason = outcome.incomplete_reason
                data["incomplete_details"] = {"reason": "max_output_tokens" if reason == "max_steps" else reason}
                data["incomplete_reason"] = reason
        else:
            status = "failed"
            error = outcome.exception if isinstance(outcome, TurnFailed) else None
            self.failure = error
            data["error"] = _response_error(error, outcome)
        await self._record(status, data, remember=self.history is not None and status == "completed")
        assert self.response is not None
        self.state.metrics.observe_response(self.response, self.record)
        for event in self.mapper.finish(self.response):
            self._emit(emit, event)
        self._ended = True

    def abandon(self, turn_id: str, error: Exception, emit: Emit[dict[str, Any]]) -> None:
        """The turn could not be run or recorded: the client is told why (a 503 when the database is unavailable)
        from what is in memory, never a stream cut short. The log keeps whatever was stored: a turn left open is
        marked interrupted, and a stored response failed, when the conversation is next held."""
        if self._ended:
            return  # told already
        if self.mapper.sequence == 0:  # failed before the stream's first events: still a well-formed stream
            for event in self.mapper.start(response_object(self.record, [])):
                self._emit(emit, event)
        self.failure = error
        data = {**self.record.data, "completed_at": time.time(), "error": _response_error(error, None)}
        self.record = dataclasses.replace(self.record, status="failed", data=data)
        self.response = response_object(self.record, [])
        for event in self.mapper.finish(self.response):
            self._emit(emit, event)
        self._ended = True

    def _turn_events(self, first_seq: int) -> list[AnyEvent]:
        events = self.run.turn_events() if self.run is not None else None
        return [e for e in events or () if e.seq >= first_seq]

    async def _record(self, status: str, data: dict[str, Any], *, remember: bool = False) -> None:
        """The response from the turn's events in memory, committed with what the turn staged, the stateless
        history's anchors (`remember`) and the lease release: one transaction, all or nothing."""
        conversation = self.conversation
        in_memory = self.run.turn_events() if self.run is not None else None
        if in_memory is None:  # a flush of the turn failed: what is stored is what the response shows
            events = await self.state.store.read(conversation.id, after=self.record.first_seq - 1)
        else:
            events = [e for e in in_memory if e.seq >= self.record.first_seq]
        record = dataclasses.replace(
            self.record, status=status, last_seq=conversation.view.head, data={**self.record.data, **data}
        )
        response = response_object(record, events)
        anchors = None
        if remember and self.history is not None:
            anchors = anchors_for(self.history, response["output"], conversation.view.head)
        await commit_turn(
            self.state.locks, conversation, response=record if record.data["store"] else None, anchors=anchors
        )
        self.record, self.response = record, response


# --- helpers ------------------------------------------------------------------------------------------------------


async def _history(state: ServerState, tenant: str, body: ResponseCreate) -> tuple[str | None, ResponseRecord | None]:
    """The conversation the response continues (None: a new one) and the previous response."""
    if body.conversation_id:
        if state.views.tenant(body.conversation_id) != tenant:  # not cached here (or not the tenant's): ask
            await owned_conversation(state, tenant, body.conversation_id, param="conversation")
        return body.conversation_id, None
    if body.previous_response_id:
        previous = await owned_response(state, tenant, body.previous_response_id, param="previous_response_id")
        running_elsewhere = previous.status == "in_progress" and not state.streams.has(previous.id)
        # not running here: running on another replica, or left in progress by a crash (then it is failed now)
        if running_elsewhere and await state.views.settle(previous.conversation_id):
            previous = await owned_response(state, tenant, previous.id, param="previous_response_id")
        if previous.status == "in_progress":
            raise InvalidRequestError(
                f"response {previous.id!r} is still in progress; continue from it once it has completed",
                param="previous_response_id",
            )
        info = await state.store.conversations.get(previous.conversation_id)
        if info.head == previous.last_seq:
            return previous.conversation_id, previous
        # the conversation moved on since that response (a branch): continue a copy of it as it was then
        forked = await fork(state.store, previous.conversation_id, previous.last_seq, tenant=tenant)
        return forked, previous
    return None, None


async def _hold(
    state: ServerState,
    exit: contextlib.AsyncExitStack,
    conversation_id: str,
    previous: ResponseRecord | None,
    tenant: str,
    model: str,
) -> Conversation:
    """Hold the conversation (released by `exit`) and bring its view to the store's head.

    A continuation of a previous response whose conversation another turn took meanwhile (it ran, or is running,
    since `_history` looked) is a branch: it continues a copy of the conversation as it was after that response,
    rather than waiting for the other turn (and then seeing it) or being refused as busy.
    """
    if previous is None or conversation_id != previous.conversation_id:  # nobody else knows a fresh fork
        try:
            await exit.enter_async_context(state.locks.hold(conversation_id))
        except NotFoundError:  # deleted since it was looked up (by another replica: its view was cached here)
            state.views.forget(conversation_id)
            raise _missing("conversation", conversation_id, "conversation") from None
        return await state.views.current(conversation_id, model)
    with contextlib.suppress(BusyError):
        await exit.enter_async_context(state.locks.hold(conversation_id, queue=False))
        conversation = await state.views.current(conversation_id, model)
        if conversation.view.head == previous.last_seq:
            return conversation
        await exit.aclose()
    forked = await fork(state.store, previous.conversation_id, previous.last_seq, tenant=tenant)
    await exit.enter_async_context(state.locks.hold(forked))
    return await state.views.current(forked, model)


async def owned_conversation(state: ServerState, tenant: str, conversation_id: str, *, param: str | None = None) -> Any:
    """The conversation's info, if the tenant owns it; another tenant's conversation is as missing as none."""
    try:
        info = await state.store.conversations.get(conversation_id)
    except NotFoundError:
        info = None
    if info is None or info.tenant != tenant:
        raise _missing("conversation", conversation_id, param)
    return info


async def owned_response(
    state: ServerState, tenant: str, response_id: str, *, param: str | None = None
) -> ResponseRecord:
    try:
        record = await state.store.responses.get(response_id)
    except NotFoundError:
        record = None
    if record is None or record.tenant != tenant:
        raise _missing("response", response_id, param)
    return record


def _missing(kind: str, object_id: str, param: str | None) -> NotFoundError:
    return NotFoundError(f"{kind} {object_id!r} not found", param=param)


def _check_outputs(entries: Sequence[object], limit: int) -> None:
    for n, entry in enumerate(entries):
        if isinstance(entry, ToolResult) and len(entry.output.encode()) > limit:
            raise PayloadTooLargeError(
                f"the output of call {entry.call_id!r} is over the {limit}-byte tool output limit; shorten it",
                param=f"input[{n}].output",
            )


async def _prepare_input(conversation: Conversation, entries: Sequence[object]) -> list[Event]:
    """The input as events for the turn. A compaction item from another context becomes a summary of what came
    before it (appended now, ahead of the turn); references to items already in this conversation are dropped.
    The input is checked whole before anything is appended, so a refused one changes nothing."""
    known: set[int] = set()  # compaction items already in this conversation
    for n, entry in enumerate(entries):
        if isinstance(entry, ItemReference):
            if not await conversation.store.read(conversation.id, ids=[entry.id]):
                raise InvalidRequestError(
                    f"item_reference {entry.id!r} is not an item of this conversation", param=f"input[{n}].id"
                )
        elif (
            isinstance(entry, CompactionInput)
            and entry.id
            and await conversation.store.read(conversation.id, ids=[entry.id])
        ):
            known.add(n)
    seeds = [n for n, entry in enumerate(entries) if isinstance(entry, CompactionInput) and n not in known]
    if not any(isinstance(entry, Event) for entry in entries[seeds[-1] + 1 if seeds else 0 :]):
        raise InvalidRequestError(
            "input has no new items for the model after its last compaction item (only references)", param="input"
        )
    given: list[Event] = []
    for n, entry in enumerate(entries):
        if isinstance(entry, CompactionInput) and n in seeds:
            if given:
                await conversation.append(*given)
                given = []
            await conversation.append(_seeded_summary(conversation, entry.summary))
        elif isinstance(entry, Event):
            given.append(entry)
    return given


async def append_entries(conversation: Conversation, entries: Sequence[Event | CompactionInput]) -> list[AnyEvent]:
    """Add items to a conversation (the Conversations API), in order; the stored events.

    A compaction item means what it means as response input: a summary of what came before it, appended as a
    compaction that keeps the view and adds the summary. One this conversation already holds (the client writing
    back the output of a response that compacted it) adds nothing.
    """
    stored: list[AnyEvent] = []
    run: list[Event] = []
    for entry in entries:
        if isinstance(entry, Event):
            run.append(entry)
            continue
        if entry.id and await conversation.store.read(conversation.id, ids=[entry.id]):
            continue
        if run:
            stored += await conversation.append(*run)
            run = []
        stored += await conversation.append(_seeded_summary(conversation, entry.summary))
    if run:
        stored += await conversation.append(*run)
    return stored


def _seeded_summary(conversation: Conversation, summary: str) -> Compaction:
    """A compaction that keeps the whole view and adds `summary` ahead of it: what a compaction item stands for."""
    view = conversation.view
    return Compaction(
        strategy="summary",
        trigger="manual",
        kept=view.kept_seqs,
        pinned=sorted(view.pinned),
        open_turns=dict(view.open_turns),
        summary=summary,
        based_on_head=view.head,
        tokens_before=view.tokens,
        totals=view.totals,
    )


def _check_answered(conversation: Conversation, given: Sequence[Event]) -> None:
    """Calls the model made in an earlier response must be answered before anything else is said (as OpenAI)."""
    answered = {e.call_id for e in given if isinstance(e, ToolResult)}
    missing = [c for c, done in conversation.view.calls.items() if not done and c not in answered]
    if missing:
        raise InvalidRequestError(
            f"no tool output found for function call {', '.join(missing)}; send a function_call_output item for "
            "each call of the previous response (an mcp_approval_response for each mcp_approval_request)",
            param="input",
        )


def _config_changes(conversation: Conversation, instructions: str | None, specs: Any) -> list[Event]:
    """Instructions and tools apply to this response: recorded as config events when they differ from the view's."""
    view = conversation.view
    change: dict[str, Any] = {}
    if instructions != view.system_prompt:
        change["system_prompt"] = instructions
    if (specs or None) != view.tools:
        change["tools"] = specs or None
    return [ConfigChange(**change)] if change else []


def _policy(resolved: ResolvedModel, body: ResponseCreate, budget: int) -> RequestPolicy:
    asked = request_policy(resolved.compaction, body.context_management, budget)
    policy = dataclasses.replace(asked.policy, summariser_input_tokens=resolved.summary_input())
    return dataclasses.replace(asked, policy=policy)


def _response_error(error: BaseException | None, outcome: TurnEvent | None) -> dict[str, Any]:
    from ..edge._errors import api_error

    if error is None:
        message = outcome.error.message if isinstance(outcome, TurnFailed) else "the turn ended without an answer"
        return {"code": "server_error", "message": message}
    mapped = api_error(error)
    code = "rate_limit_exceeded" if mapped.status == 429 else "server_error"
    if mapped.code == "context_length_exceeded":
        code = "invalid_prompt"
    return {"code": code, "message": mapped.message, "type": mapped.code, "param": mapped.param}
