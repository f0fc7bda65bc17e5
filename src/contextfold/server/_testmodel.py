"""The built-in `test` model: deterministic, offline, keyless, so a newcomer can try every endpoint of the server.

It answers from the last item of the window it is sent:
- a user message with `/tool NAME {json}` lines calls those tools (several lines: parallel calls), `/recall WORDS`
  calls the built-in `recall` tool; a tool the request does not offer gets a text answer saying so;
- `/fail STATUS [MESSAGE]` raises the typed `ModelError` a provider answering STATUS would cause (`/fail 429`,
  `/fail 503`, `/fail 400 context length exceeded`), so the error paths can be tried;
- `/long N` answers with about N words (cut at the output limit with stop reason `length`, as a real model is);
- a tool result answers with the tools' names and the first line of each output (a recall hit shows up there);
- anything else is quoted back with the number of items and the ~tokens the model saw.
It is its own summariser: sent the compaction prompt, it writes an extractive summary (the lines that carry
identifiers, under the prompt's sections) within the output limit. It never retries: its failures are on purpose.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import AsyncIterator, Sequence

from ..compaction import SUMMARY_PROMPT
from ..events import Item, Message, ToolCall, ToolResult, new_id, text_of
from ..models import (
    ModelProfile,
    ModelResponse,
    ModelSettings,
    RetryPolicy,
    StreamEvent,
    StreamingModel,
    ToolCallRequest,
    error_for_status,
    stream_of,
)
from ..view import DEFAULT_CHARS_PER_TOKEN, TokenEstimator, Window, text_tokens
from ..view._tokens import tools_tokens

TEST_WINDOW = 16_384
TEST_MAX_OUTPUT = 1_024
MAX_LONG_WORDS = 100_000
_FILLER = "the log is the truth and the view is a fold of the log so nothing is ever lost"
_IDENTIFIER = re.compile(r"\d")
"""A line that names something by a number (a path, a version, an id). `\\b[\\w./-]*\\d[\\w./-]*\\b` finds a match
exactly when the line holds a digit, and tried at every position of a long line it took time quadratic in it."""
_ESTIMATOR = TokenEstimator()
HINT = "(built-in test model: try /long 50, /fail 429, /tool NAME {...} or /recall WORDS)"


class TestModel(StreamingModel):
    """The scripted model served as `test`: no key, no network, the same answer for the same window."""

    __test__ = False  # not a pytest test class, whatever its name
    provider_name = "test"

    def __init__(self, name: str = "test", *, context_window: int | None = None) -> None:
        profile = ModelProfile(context_window=context_window or TEST_WINDOW, max_output_tokens=TEST_MAX_OUTPUT)
        super().__init__(name, profile=profile, retry=RetryPolicy(attempts=1))

    async def _stream_once(self, window: Window, settings: ModelSettings) -> AsyncIterator[StreamEvent]:
        for event in stream_of(self.answer(window, settings)):
            yield event

    def answer(self, window: Window, settings: ModelSettings) -> ModelResponse:
        """The whole response to `window` (raises the `ModelError` a `/fail` asks for)."""
        return dataclasses.replace(self._answer(window, settings), model=self.name)

    def _answer(self, window: Window, settings: ModelSettings) -> ModelResponse:
        seen = window_tokens(window)
        limit = settings.max_output_tokens or window.max_output_tokens or TEST_MAX_OUTPUT
        if window.system_prompt == SUMMARY_PROMPT:
            return _text(extractive_summary(window, limit), seen)
        last = window.items[-1] if window.items else None
        if isinstance(last, ToolResult):
            return _text(_about_results(window.items), seen)
        if isinstance(last, Message) and last.role == "user":
            command = text_of(last).strip()
            verb = command.split(maxsplit=1)[0] if command else ""
            if verb == "/fail":
                return _text(_fail(command), seen)
            if verb == "/long":
                return _long(command, limit, seen)
            if verb in ("/tool", "/recall"):
                return _calls(command, window, seen)
        return _text(_echo(window, seen), seen)


def window_tokens(window: Window) -> int:
    """An estimate of what the model was sent: instructions, tools and items."""
    items = sum(item.tokens or _ESTIMATOR.estimate(item) for item in window.items)
    return text_tokens(window.system_prompt or "") + tools_tokens(window.tools) + items


def _text(text: str, seen: int, stop: str = "stop") -> ModelResponse:
    return ModelResponse(
        text=text,
        input_tokens=seen,
        output_tokens=max(1, len(text) // 4),
        stop_reason="length" if stop == "length" else "stop",
    )


def _echo(window: Window, seen: int) -> str:
    said = next((text_of(i) for i in reversed(window.items) if isinstance(i, Message) and i.role == "user"), None)
    quoted = f'You said: "{_clip(said, 200)}".' if said is not None else "There is no user message."
    items = len(window.items)
    return f"{quoted} I saw {items} item{'' if items == 1 else 's'}, about {seen} tokens. {HINT}"


def _fail(command: str) -> str:
    """Raise the error of the status asked for; a malformed command gets its usage as the answer."""
    parts = command.split(maxsplit=2)
    status = _number(parts[1]) if len(parts) > 1 else None
    if status is None or not 400 <= status <= 599:
        return "usage: /fail STATUS [MESSAGE], with an HTTP status from 400 to 599"
    raise error_for_status("test", status, parts[2] if len(parts) > 2 else f"failure asked for with /fail {status}")


def _long(command: str, limit: int, seen: int) -> ModelResponse:
    parts = command.split()
    wanted = _number(parts[1]) if len(parts) == 2 else None
    if wanted is None or not 1 <= wanted <= MAX_LONG_WORDS:
        return _text(f"usage: /long N, with N words from 1 to {MAX_LONG_WORDS}", seen)
    filler = _FILLER.split(" ")
    words: list[str] = []
    chars = 0
    for n in range(wanted):
        word = filler[n % len(filler)]
        if (chars + len(word) + 1) // 4 > limit:  # the output limit cuts the answer, as it would a real model's
            return _text(" ".join(words), seen, stop="length")
        words.append(word)
        chars += len(word) + 1
    return _text(" ".join(words), seen)


def _calls(command: str, window: Window, seen: int) -> ModelResponse:
    offered = [tool.name for tool in window.tools or []]
    calls: list[ToolCallRequest] = []
    problems: list[str] = []
    for line in command.splitlines():
        verb, _, rest = line.strip().partition(" ")
        if verb == "/recall":
            query = rest.strip()
            if "recall" not in offered:
                problems.append("recall is not among this request's tools")
            elif not query:
                problems.append("usage: /recall WORDS")
            else:
                calls.append(ToolCallRequest(new_id("call"), "recall", json.dumps({"query": query})))
        elif verb == "/tool":
            name, _, arguments = rest.strip().partition(" ")
            arguments = arguments.strip() or "{}"
            if name not in offered:
                problems.append(f"tool {name!r} is not among this request's tools")
            elif not _is_object(arguments):
                problems.append(f"the arguments of {name} are not a JSON object: {_clip(arguments, 80)}")
            else:
                calls.append(ToolCallRequest(new_id("call"), name, arguments))
    if problems:
        available = ", ".join(offered) or "none"
        return _text(f"I cannot make these calls: {'; '.join(problems)}. Tools offered: {available}.", seen)
    return ModelResponse(
        tool_calls=calls,
        input_tokens=seen,
        output_tokens=sum(len(c.arguments) for c in calls) // 4 + 1,
        stop_reason="tool_calls",
    )


def _about_results(items: Sequence[Item]) -> str:
    names = {item.call_id: item.name for item in items if isinstance(item, ToolCall)}
    results: list[ToolResult] = []
    for item in reversed(items):
        if not isinstance(item, ToolResult):
            break
        results.insert(0, item)
    said = []
    for result in results:
        first = next((line.strip() for line in result.output.splitlines() if line.strip()), "(empty)")
        verb = "failed with" if result.is_error else "returned"
        said.append(f"{names.get(result.call_id, 'a tool')} {verb}: {_clip(first, 200)}")
    return "; ".join(said) + "."


def extractive_summary(window: Window, max_tokens: int) -> str:
    """A summary made without a model: the goal, then the lines that carry identifiers (the previous summary's
    first, newest kept when they do not all fit), then the latest state, under the sections the prompt asks for."""
    text = "\n".join(text_of(item) for item in window.items if isinstance(item, Message))
    previous = _between(text, "<previous-summary>", "</previous-summary>")
    transcript = _between(text, "<conversation>", "</conversation>") or ""
    lines = [line for line in transcript.splitlines() if line.startswith("[")]
    user_lines = [line.removeprefix("[user] ") for line in lines if line.startswith("[user]")]
    goal = _section(previous, "Goal") or _clip(user_lines[0] if user_lines else "Carry on with the conversation.", 300)
    carried = (_section(previous, "Identifiers") or "").splitlines()
    found = [_clip(line, 160) for line in lines if _IDENTIFIER.search(line)]
    state = _clip(lines[-1], 300) if lines else "Nothing yet."
    hints = "Use recall with any word of the lines above to find what was left out."
    head, tail = f"## Goal\n{goal}\n## Identifiers\n", f"\n## Current state\n{state}\n## Lookup hints\n{hints}"
    room = int(max_tokens * DEFAULT_CHARS_PER_TOKEN * 0.7) - len(head) - len(tail)  # margin: ratios vary by model
    kept: list[str] = []
    for line in reversed([*carried, *found]):
        if line in kept:
            continue
        if sum(len(k) + 1 for k in kept) + len(line) + 1 > room:
            break
        kept.insert(0, line)
    summary = head + ("\n".join(kept) or "(none)") + tail
    return summary[: max(1, int(max_tokens * DEFAULT_CHARS_PER_TOKEN * 0.7))]


def _between(text: str, start: str, end: str) -> str | None:
    found = re.search(re.escape(start) + r"\n?(.*?)\n?" + re.escape(end), text, re.S)
    return found.group(1) if found else None


def _section(summary: str | None, title: str) -> str | None:
    if not summary:
        return None
    found = re.search(rf"^## {title}\n(.*?)(?=^## |\Z)", summary, re.S | re.M)
    return found.group(1).strip() if found and found.group(1).strip() else None


def _number(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() else None


def _is_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
