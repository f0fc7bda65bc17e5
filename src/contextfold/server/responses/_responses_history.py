"""Stateless Responses requests: the stored history a full-history `input` extends.

A client that keeps its own history (openai-agents' `OpenAIConversationsSession`, a plain `responses.create(input=
[every item so far])`) names no conversation and no previous response. Like a proxied client, its history is matched
to the conversation it extends by the proxy's anchors (`_proxy_match`), hardened the same way (`_match_log`), and
only what is new is appended; the turn then folds as usual. After each such response the anchors of the history the
client now holds (its input and the response's output) are recorded.

Items are hashed by what they parse to, not by their JSON: ids, statuses, annotations and key order do not count,
so an item the server sent is the same item when the client sends it back, however its SDK re-serialised it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..._conversation import Conversation
from ...events import Event, FilePart, ImagePart, Message, Reasoning, TextPart, ToolCall, ToolResult
from ...store import TurnAnchors
from .._state import ServerState
from ..proxy._match_log import hold_match, tail_holds
from ..proxy._proxy_match import History, find
from ._items_input import ApprovalInput, CompactionInput, InputEntry, ItemReference, parse_input

log = logging.getLogger("contextfold.server")
STATELESS = "contextfold.stateless"
"""Metadata of the conversations that stateless requests fold into: `stored`, or `hidden` when the request that
made it had `store: false` (such a conversation is not listed: the client never asked for one to be kept)."""

_ASSISTANT_ITEMS = (
    "function_call",
    "mcp_call",
    "file_search_call",
    "mcp_list_tools",
    "mcp_approval_request",
    "reasoning",
    "compaction",
)
_ANSWERS = ("function_call_output", "mcp_approval_response")


@dataclass(frozen=True, slots=True)
class InputItem:
    """One item of a Responses input, as the anchors see it."""

    key: bytes
    role: str
    """The message's role; `assistant` for what the model produced (calls, reasoning, compaction)."""
    entries: tuple[InputEntry, ...]

    @property
    def events(self) -> tuple[Event, ...]:
        return tuple(e for e in self.entries if isinstance(e, Event))


@dataclass(frozen=True, slots=True)
class ItemHistory:
    """A Responses input as a history: its items. Instructions are not part of it: in the Responses API they
    apply to one response (a change is recorded as configuration), and `responses.compact` sends none."""

    messages: tuple[InputItem, ...]
    system_prompt: str | None = None


def history_of(items: object) -> ItemHistory:
    """The input's items (each parsed alone: the request as a whole has been parsed and checked already); a
    string input is one user message."""
    listed = [{"role": "user", "content": items}] if isinstance(items, str) else items
    if not isinstance(listed, list):
        return ItemHistory(())
    return ItemHistory(tuple(input_item(item) for item in listed))


def input_item(item: object) -> InputItem:
    entries = tuple(parse_input([item]))
    kind = item.get("type") if isinstance(item, dict) else None
    role = "assistant" if kind in _ASSISTANT_ITEMS else "tool" if kind in _ANSWERS else "user"
    if isinstance(item, dict) and isinstance(item.get("role"), str) and kind in (None, "message"):
        role = str(item["role"])
    canonical = json.dumps([_canonical(e) for e in entries], separators=(",", ":"), ensure_ascii=False)
    return InputItem(hashlib.blake2b(canonical.encode(), digest_size=16).digest(), role, entries)


def output_keys(output: Sequence[dict[str, Any]]) -> list[bytes]:
    """The keys of a response's output items, as they will be when the client sends them back."""
    return [input_item(item).key for item in output]


def _canonical(entry: InputEntry) -> object:
    if isinstance(entry, Message):
        return ["message", entry.role, [_part(p) for p in entry.content]]
    if isinstance(entry, ToolCall):
        return ["call", entry.call_id, entry.name, _arguments(entry.arguments)]
    if isinstance(entry, ToolResult):
        return ["result", entry.call_id, entry.output, entry.is_error]
    if isinstance(entry, Reasoning):
        return ["reasoning", entry.data.get("encrypted_content"), entry.text]
    if isinstance(entry, CompactionInput):
        return ["compaction", entry.summary]
    if isinstance(entry, ItemReference):
        return ["reference", entry.id]
    if isinstance(entry, ApprovalInput):
        return ["approval", entry.request_id, entry.approve]
    return [type(entry).__name__]


def _part(part: object) -> object:
    if isinstance(part, TextPart):
        return ["text", part.text]
    if isinstance(part, ImagePart):
        return ["image", part.url, part.detail]
    if isinstance(part, FilePart):
        return ["file", part.media_type, part.file_id, part.filename, part.data]
    return [type(part).__name__]


def _arguments(text: str) -> str:
    try:
        return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    except (ValueError, RecursionError):
        return text


async def hold_stateless(
    state: ServerState, exit: contextlib.AsyncExitStack, tenant: str, history: ItemHistory, model: str
) -> tuple[Conversation | None, int]:
    """The conversation the history extends, held, and how many of its items it holds; (None, 0) if none."""
    match = await find(state.store, tenant, History(history))
    if match is not None and not match.by_chain and not await tail_holds(state.store, match, history.messages, ()):
        match = None
    if match is None:
        return None, 0
    return await hold_match(state, exit, tenant, match, model, {STATELESS: "forked"}), match.matched


def anchors_for(history: ItemHistory, output: Sequence[Any], seq: int) -> TurnAnchors | None:
    """The anchors a stateless turn commits with (see `remember`): the conversation at `seq` for the history the
    client now holds; None when its output has nothing to key on."""
    keys = output_keys([item for item in output if isinstance(item, dict)])
    return TurnAnchors(seq, History(history).anchors_after(*keys)) if keys else None


async def remember(state: ServerState, conversation_id: str, history: ItemHistory, output: Sequence[Any]) -> None:
    """Record where the conversation stands for the history the client now holds (its input, then the output), so
    that its next request, which sends all of it back, is matched. A failure loses nothing stored: the next
    request would start a conversation of its own."""
    keys = output_keys([item for item in output if isinstance(item, dict)])

    if not keys:
        return
    try:
        head = (await state.store.conversations.get(conversation_id)).head
        await state.store.anchors.put(conversation_id, head, History(history).anchors_after(*keys))
    except Exception:
        log.exception("could not record the anchors of stateless conversation %s", conversation_id)
