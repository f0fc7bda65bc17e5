"""Message-grammar checks (DESIGN invariant 6) and the tool-call pairing invariant (invariant 1).

- `validate_items` checks the window's own items: every call answered once, after it; batches contiguous and
  answered before anything else comes.
- `validate_openai_chat`, `validate_openai_responses`, `validate_anthropic`, `validate_gemini` check a
  rendered payload against the rules the API enforces, and return readable violations (empty when valid).
- `check(window, api)` renders and validates, raising `GrammarError`: a violation is a bug, never sent.
- `repair(window)` is the production fallback: it drops orphan calls and results (whole batches), logged.
- `send_check(window, grammar, provider)` is what the runtime runs before every model request: pairing plus the
  target provider's own grammar (`grammar`, the adapter's check of the payload it would send); a violation is
  repaired, logged and counted in `REPAIRS` (the server's /metrics), and a window still broken raises.

`validate_items` and `validate_openai_chat` are the resumable scans of `_scan` run over a whole sequence; the send
check resumes them over the new items of a window that extends the last one of its lineage (same violations).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, overload

from .._errors import GrammarError, InvalidRequestError
from ..events import Item, Message, Reasoning, TextPart, ToolCall, ToolResult
from ._fold import Window
from ._render import (
    Batch,
    Payload,
    render_anthropic,
    render_gemini,
    render_openai_chat,
    render_openai_responses,
    segments,
)
from ._scan import ChatScan, ItemScan, window_item_violations

log = logging.getLogger("contextfold.view")

WireAPI = Literal["openai-chat", "openai-responses", "anthropic", "gemini"]
WIRE_APIS: tuple[WireAPI, ...] = ("openai-chat", "openai-responses", "anthropic", "gemini")


# --- the window's own items (invariant 1) -------------------------------------------------------------------


def validate_items(items: Sequence[Item]) -> list[str]:
    """Violations of tool-call pairing in the items themselves."""
    return ItemScan().feed(items).finish()


def repair(window: Window) -> Window:
    """The window with orphan calls and results dropped (whole batches), and reasoning left dangling by them.

    A batch is kept only when its calls are contiguous, its call ids are new, and every call has a result in
    the run of results right after it (extra or duplicate results are dropped). What was dropped is logged.
    """
    kept: list[Item] = []
    dropped: list[int] = []
    seen_calls: set[str] = set()
    seen_batches: set[str] = set()
    for segment in segments(window.items):
        if not isinstance(segment, Batch):
            kept.append(segment)
            continue
        ids = [c.call_id for c in segment.calls]
        answers: dict[str, ToolResult] = {}
        for result in segment.results:
            if result.call_id in ids:
                answers.setdefault(result.call_id, result)
        batch_id = segment.calls[0].batch_id if segment.calls else None
        ok = (
            batch_id is not None
            and batch_id not in seen_batches
            and len(set(ids)) == len(ids)
            and seen_calls.isdisjoint(ids)
            and len(answers) == len(ids)
        )
        if batch_id is not None:
            seen_batches.add(batch_id)
        if ok:
            seen_calls.update(ids)
            kept.extend(segment.calls)
        else:
            dropped.extend(c.seq for c in segment.calls)
        keep = {id(r) for r in answers.values()} if ok else set()
        for result in segment.results:
            if id(result) in keep:
                kept.append(result)
            else:
                dropped.append(result.seq)
    final: list[Item] = []
    for index, item in enumerate(kept):
        if isinstance(item, Reasoning) and not _followed_by_output(kept, index):
            dropped.append(item.seq)
        else:
            final.append(item)
    if dropped:
        log.warning("grammar repair dropped items that break tool-call pairing: seqs %s", sorted(dropped))
    return dataclasses.replace(window, items=final, lineage=None)  # other items: not an extension of any window


REPAIRS: Counter[str] = Counter()
"""Windows repaired before a send, by provider, since the process started (a repair is a bug made visible)."""


def send_check(
    window: Window, grammar: Callable[[Window], list[str]] | None, provider: str, *, where: str = ""
) -> Window:
    """The window to send to `provider`: unchanged when its items pair up and (`grammar`: the adapter's check of
    the payload it renders) it obeys the provider's grammar; else repaired, logged (naming `where`, say the
    conversation) and counted by provider. A window still broken after the repair raises `GrammarError`: it is
    never sent."""
    # The pairing scan goes on from the previous window of the same lineage (O(new items)); the adapter's
    # `grammar` does the same with its own payload where it can (Chat: `models/_incremental.py`).
    violations = window_item_violations(window) + (grammar(window) if grammar else [])
    if not violations:
        return window
    log.error("repairing a window before sending it to %s (%s): %s", provider, where, "; ".join(violations))
    REPAIRS[provider] += 1
    repaired = repair(window)
    left = validate_items(repaired.items) + (grammar(repaired) if grammar else [])
    if left:
        raise GrammarError(provider, left)
    return repaired


def _followed_by_output(items: Sequence[Item], index: int) -> bool:
    """Whether the reasoning at `index` is followed by the assistant output it produced (a call or text)."""
    for item in items[index + 1 :]:
        if isinstance(item, Reasoning):
            continue
        if isinstance(item, ToolCall):
            return True
        return (
            isinstance(item, Message)
            and item.role == "assistant"
            and any(isinstance(part, TextPart) and part.text for part in item.content)
        )
    return False


# --- OpenAI Chat Completions --------------------------------------------------------------------------------


def validate_openai_chat(messages: Sequence[Mapping[str, Any]]) -> list[str]:
    """Violations of the Chat Completions grammar: tool messages answer the calls of the assistant message right
    before their run, each once; ids unique; an assistant message has content or calls."""
    return ChatScan().feed(messages).finish()


# --- OpenAI Responses ---------------------------------------------------------------------------------------

_RESPONSES_ROLES = ("user", "assistant", "system", "developer")


def validate_openai_responses(items: Sequence[Mapping[str, Any]]) -> list[str]:
    out: list[str] = []
    calls: dict[str, int] = {}
    answered: set[str] = set()
    for i, item in enumerate(items):
        kind = item.get("type")
        if kind == "function_call":
            cid = str(item.get("call_id"))
            if cid in calls:
                out.append(f"input[{i}]: function_call call_id {cid!r} is used twice")
            calls[cid] = i
        elif kind == "function_call_output":
            cid = str(item.get("call_id"))
            if cid not in calls:
                out.append(f"input[{i}]: function_call_output {cid!r} has no function_call before it")
            elif cid in answered:
                out.append(f"input[{i}]: function_call {cid!r} has two function_call_output items")
            answered.add(cid)
        elif kind == "reasoning":
            following = next((it for it in items[i + 1 :] if it.get("type") != "reasoning"), None)
            if following is None or not (
                following.get("type") == "function_call"
                or (following.get("type") == "message" and following.get("role") == "assistant")
            ):
                out.append(f"input[{i}]: reasoning item is not followed by the output item it produced")
        elif kind == "message":
            if item.get("role") not in _RESPONSES_ROLES:
                out.append(f"input[{i}]: message has unknown role {item.get('role')!r}")
        else:
            out.append(f"input[{i}]: unknown item type {kind!r}")
    out.extend(
        f"input[{at}]: function_call {cid!r} has no function_call_output after it"
        for cid, at in calls.items()
        if cid not in answered
    )
    return out


# --- Anthropic Messages -------------------------------------------------------------------------------------


def _blocks(message: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return list(content or [])


def validate_anthropic(messages: Sequence[Mapping[str, Any]]) -> list[str]:
    if not messages:
        return ["messages is empty: Anthropic needs at least one user message"]
    out: list[str] = []
    uses: list[list[str]] = []  # tool_use ids per message
    seen: set[str] = set()
    for i, message in enumerate(messages):
        role = message.get("role")
        blocks = _blocks(message)
        kinds = [b.get("type") for b in blocks]
        if role not in ("user", "assistant"):
            out.append(f"messages[{i}]: role {role!r} is not user or assistant (system goes in `system`)")
        if i == 0 and role != "user":
            out.append(f"messages[0]: the first message must be from the user, not {role!r}")
        if i > 0 and role == messages[i - 1].get("role"):
            out.append(f"messages[{i - 1}] and messages[{i}] are both {role!r}: roles must alternate")
        if not blocks:
            out.append(f"messages[{i}]: content is empty")
        if any(b.get("type") == "text" and not str(b.get("text") or "").strip() for b in blocks):
            out.append(f"messages[{i}]: a text block is empty or only whitespace")
        ids = [str(b.get("id")) for b in blocks if b.get("type") == "tool_use"]
        for cid in ids:
            if cid in seen:
                out.append(f"messages[{i}]: tool_use id {cid!r} is used twice")
            seen.add(cid)
        if role != "assistant" and (ids or {"thinking", "redacted_thinking"} & set(kinds)):
            out.append(f"messages[{i}]: tool_use and thinking blocks belong in assistant messages")
        if role != "user" and "tool_result" in kinds:
            out.append(f"messages[{i}]: tool_result blocks belong in user messages")
        uses.append(ids if role == "assistant" else [])
    for i, message in enumerate(messages):
        if message.get("role") != "user":
            if uses[i] and (i + 1 == len(messages) or messages[i + 1].get("role") != "user"):
                out.append(f"messages[{i}]: tool_use {uses[i]} is not followed by a user message with tool_result")
            continue
        blocks = _blocks(message)
        kinds = [b.get("type") for b in blocks]
        results = kinds.count("tool_result")
        if kinds[:results] != ["tool_result"] * results:
            out.append(f"messages[{i}]: tool_result blocks must come first in the message, before other content")
        expected = uses[i - 1] if i > 0 else []
        answers = Counter(str(b.get("tool_use_id")) for b in blocks if b.get("type") == "tool_result")
        for cid, count in answers.items():
            if cid not in expected:
                out.append(f"messages[{i}]: tool_result {cid!r} has no tool_use in the preceding assistant message")
            elif count > 1:
                out.append(f"messages[{i}]: tool_use {cid!r} is answered {count} times")
        missing = [cid for cid in expected if cid not in answers]
        if missing:
            out.append(f"messages[{i - 1}]: tool_use {missing} not answered by tool_result in messages[{i}]")
    return out


# --- Gemini generateContent ---------------------------------------------------------------------------------


def _count(parts: Sequence[Mapping[str, Any]], key: str) -> int:
    return sum(1 for p in parts if key in p)


def validate_gemini(contents: Sequence[Mapping[str, Any]]) -> list[str]:
    if not contents:
        return ["contents is empty: Gemini needs at least one user turn"]
    out: list[str] = []
    for i, content in enumerate(contents):
        role = content.get("role")
        parts: list[Mapping[str, Any]] = list(content.get("parts") or [])
        if role not in ("user", "model"):
            out.append(f"contents[{i}]: role {role!r} is not user or model")
        if i == 0 and role != "user":
            out.append(f"contents[0]: the first turn must be from the user, not {role!r}")
        if not parts:
            out.append(f"contents[{i}]: parts is empty")
        calls, responses = _count(parts, "functionCall"), _count(parts, "functionResponse")
        if calls and role != "model":
            out.append(f"contents[{i}]: functionCall parts belong in model turns")
        if responses and role != "user":
            out.append(f"contents[{i}]: functionResponse parts belong in user turns")
        nxt = contents[i + 1] if i + 1 < len(contents) else None
        if role == "model" and calls:
            answered = _count(nxt.get("parts") or [], "functionResponse") if nxt and nxt.get("role") == "user" else 0
            if answered != calls:
                out.append(
                    f"contents[{i}]: {calls} functionCall parts but the next user turn has {answered} "
                    "functionResponse parts"
                )
        prev = contents[i - 1] if i > 0 else None
        if (
            role == "user"
            and responses
            and not (prev and prev.get("role") == "model" and _count(prev.get("parts") or [], "functionCall"))
        ):
            out.append(f"contents[{i}]: functionResponse parts with no functionCall in the preceding model turn")
    return out


# --- one entry point ----------------------------------------------------------------------------------------

ChatPayload = list[Payload]
SystemPayload = tuple[str | None, list[Payload]]
GeminiPayload = tuple[Payload | None, list[Payload]]


@overload
def check(window: Window, api: Literal["openai-chat"]) -> ChatPayload: ...
@overload
def check(window: Window, api: Literal["openai-responses", "anthropic"]) -> SystemPayload: ...
@overload
def check(window: Window, api: Literal["gemini"]) -> GeminiPayload: ...
@overload
def check(window: Window, api: str) -> ChatPayload | SystemPayload | GeminiPayload: ...
def check(window: Window, api: str) -> ChatPayload | SystemPayload | GeminiPayload:
    """Render `window` for `api` and return the payload; raise `GrammarError` if it breaks the grammar."""
    payload: ChatPayload | SystemPayload | GeminiPayload
    if api == "openai-chat":
        payload = render_openai_chat(window)
        violations = validate_openai_chat(payload)
    elif api == "openai-responses":
        payload = render_openai_responses(window)
        violations = validate_openai_responses(payload[1])
    elif api == "anthropic":
        payload = render_anthropic(window)
        violations = validate_anthropic(payload[1])
    elif api == "gemini":
        payload = render_gemini(window)
        violations = validate_gemini(payload[1])
    else:
        raise InvalidRequestError(f"unknown wire API {api!r}; expected one of {', '.join(WIRE_APIS)}")
    if violations:
        raise GrammarError(api, violations)
    return payload
