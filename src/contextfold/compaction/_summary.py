"""Tier 2 and tier 3 texts: the model summary (structured, incremental) and the deterministic digest.

The summary prompt asks for the sections an agent needs to carry on (goal, decisions, identifiers verbatim, errors
and fixes, current state, where to look things up) and builds on the previous summary instead of starting over, so
a summary of summaries keeps what the first one knew. The digest needs no model and always fits: it is what a
conversation falls back to when the summariser fails, times out, or answers with something empty or too long.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from .._errors import ContextfoldError
from ..events import Item, Message, TextPart, ToolCall, ToolResult
from ..models import Model, ModelSettings
from ..view import Window, text_tokens
from ._state import split_summary

SUMMARY_PROMPT = """\
You compress the earlier part of a conversation between a user and an AI agent so the agent can continue the \
work without it. Write a dense, factual summary with these sections, omitting a section only when it is empty:

## Goal
What the user wants overall, and any constraints or preferences they stated.
## Decisions
What was decided or agreed, and why.
## Identifiers
File paths, names, ids, numbers, URLs, commands and values exactly as written (verbatim, never paraphrased).
## Errors and fixes
What failed, the error messages that matter, and what fixed them.
## Current state
What has been done, what is in progress, and what comes next.
## Lookup hints
Which details were left out and words to search for them (the agent can call recall with such words).

Build on the previous summary when one is given: keep what still matters, update what changed, never drop \
identifiers. Answer with the summary only."""

_ITEM_CHARS_FLOOR = 200
_LABEL_CHARS = 64
"""About what a line adds to its text: its `[label]` and the `…[N more characters]` of a cut."""


def transcript(items: Sequence[Item], max_tokens: int) -> str:
    """The items as plain text, each cut to an equal share of `max_tokens` so the whole stays bounded."""
    if not items:
        return ""
    budget = int(max_tokens * 3.5)
    share = max(_ITEM_CHARS_FLOOR, budget // len(items))
    if share * len(items) > budget:  # more items than the floor affords: an equal share, less each line's label
        share = max(0, budget // len(items) - _LABEL_CHARS)
    lines = []
    for item in items:
        label, text = _describe(item)
        if len(text) > share:
            text = text[:share] + f" …[{len(text) - share} more characters]"
        lines.append(f"[{label}] {text}")
    return "\n".join(lines)


def _describe(item: Item) -> tuple[str, str]:
    if isinstance(item, Message):
        return item.role, "\n".join(
            p.text if isinstance(p, TextPart) else f"<{type(p).__name__}>" for p in item.content
        )
    if isinstance(item, ToolCall):
        return f"tool call {item.name} #{item.call_id}", item.arguments
    if isinstance(item, ToolResult):
        return f"tool result #{item.call_id}{' (error)' if item.is_error else ''}", item.output
    return "reasoning", item.text or ""


async def summarise(
    model: Model,
    items: Sequence[Item],
    previous: str | None,
    instructions: str | None,
    *,
    max_tokens: int,
    input_tokens: int,
    time_limit: float,
) -> tuple[str, int, int]:
    """Ask `model` for a summary. Returns (text, input tokens, output tokens); raises on any failure."""
    parts = []
    if previous:
        parts.append(f"<previous-summary>\n{previous}\n</previous-summary>")
    parts.append(f"<conversation>\n{transcript(items, input_tokens)}\n</conversation>")
    if instructions:
        parts.append(f"<instructions>\n{instructions}\n</instructions>")
    parts.append(f"Write the summary in at most {max_tokens} tokens.")
    window = Window(SUMMARY_PROMPT, None, max_tokens, [Message(role="user", content=[TextPart("\n\n".join(parts))])])
    response = await asyncio.wait_for(model.request(window, ModelSettings(max_output_tokens=max_tokens)), time_limit)
    return response.text.strip(), response.input_tokens, response.output_tokens


class SummaryRejected(ContextfoldError):
    """The summariser answered, but not with something usable."""


def digest(items: Sequence[Item], previous: str | None, reason: str, max_tokens: int, chars_per_token: float) -> str:
    """A deterministic summary: the first words of every folded message and tool outcome, cut to fit.

    It merges, never nests: built over an earlier digest, it takes that digest's lines (and the model summary it
    carried, if any) into its own sections instead of quoting it whole, so after hundreds of compactions it is
    still one header, at most one earlier model summary, and the most recent activity. The carried state is not
    part of it (the compactor puts the state in front of whatever summary it uses).
    """
    earlier, activity = _digest_parts(split_summary(previous)[1])
    head = [f"[Digest of the folded conversation, made without a model ({reason}). Use recall for details.]"]
    if earlier:
        head += ["## Earlier summary", _clip(earlier, max(200, int(max_tokens * chars_per_token) // 3))]
    head.append("## Folded activity")
    lines = list(activity)
    for item in items:
        if isinstance(item, Message):
            text = " ".join(p.text for p in item.content if isinstance(p, TextPart))
            lines.append(f"- {item.role}: {_clip(text, 160)}")
        elif isinstance(item, ToolCall):
            lines.append(f"- called {item.name}({_clip(item.arguments, 80)})")
        elif isinstance(item, ToolResult):
            outcome = "error" if item.is_error else "ok"
            lines.append(f"  -> {outcome}: {_clip(item.summary or item.output, 100)}")
    return fit_text([*head, *lines], max_tokens, chars_per_token, keep=len(head))


def _digest_parts(body: str) -> tuple[str, list[str]]:
    """(the model summary an earlier text carried, its activity lines): a digest's sections, or a model summary."""
    if not body.startswith("[Digest of"):
        return body.strip(), []
    earlier = ""
    if "\n## Earlier summary\n" in body:
        earlier = body.split("\n## Earlier summary\n", 1)[1].split("\n## Folded activity", 1)[0]
    lines = body.split("\n## Folded activity\n", 1)[1].splitlines() if "\n## Folded activity\n" in body else []
    if not lines:  # a digest written before the sections: its own lines, without its header or what it quoted
        lines = [ln for ln in body.splitlines()[1:] if ln.startswith(("- ", "  -> "))]
    return earlier.strip(), [ln for ln in lines if ln != "- …"]


def fit_text(lines: list[str], max_tokens: int, chars_per_token: float, keep: int = 2) -> str:
    """Join lines, dropping the oldest lines after the first `keep` (the most recent ones matter most) until it
    fits."""
    text = "\n".join(lines)
    if text_tokens(text, chars_per_token) <= max_tokens:
        return text
    head, tail = lines[:keep], lines[keep:]
    while tail and text_tokens("\n".join([*head, "- …", *tail]), chars_per_token) > max_tokens:
        tail = tail[max(1, len(tail) // 8) :]
    text = "\n".join([*head, "- …", *tail])
    budget_chars = int(max_tokens * chars_per_token)
    return text if len(text) <= budget_chars else text[: max(0, budget_chars - 1)] + "…"


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
