"""Token estimates: computed once per event and cached on it, calibrated per model from reported usage.

An estimate is characters divided by a chars-per-token ratio, plus a small per-item overhead for the role and
framing. Each model starts at a conservative ratio and is calibrated from what its provider reports, so estimates
stay close without shipping a tokenizer per model.
"""

from __future__ import annotations

import math

import msgspec

from ..events import (
    Compaction,
    ConfigChange,
    Event,
    FilePart,
    ImagePart,
    Message,
    Reasoning,
    TextPart,
    ToolCall,
    ToolResult,
    ToolSpec,
)

SUMMARY_HEADER = "[Summary of the earlier conversation, which was folded away to fit the context window]\n"
DEFAULT_CHARS_PER_TOKEN = 3.5  # errs high on tokens: English prose is ~4, code and JSON less
ITEM_OVERHEAD = 4
IMAGE_TOKENS = 765
_MIN_RATIO, _MAX_RATIO = 1.0, 8.0
_SMOOTHING = 0.5


def text_tokens(text: str, chars_per_token: float = DEFAULT_CHARS_PER_TOKEN) -> int:
    return math.ceil(len(text) / chars_per_token) if text else 0


def tools_tokens(tools: list[ToolSpec] | None) -> int:
    if not tools:
        return 0
    return sum(ITEM_OVERHEAD + text_tokens(msgspec.json.encode(tool).decode()) for tool in tools)


class TokenEstimator:
    """Per-model chars-per-token ratios, learned from (estimated, reported) pairs."""

    def __init__(self, default_ratio: float = DEFAULT_CHARS_PER_TOKEN) -> None:
        self.default_ratio = default_ratio
        self._ratios: dict[str, float] = {}

    def ratio(self, model: str | None) -> float:
        return self._ratios.get(model or "", self.default_ratio)

    def calibrate(self, model: str, estimated: int, reported: int) -> None:
        """Move the model's ratio towards the one that would have produced the reported count."""
        if estimated <= 0 or reported <= 0:
            return
        current = self.ratio(model)
        observed = current * estimated / reported
        blended = current + _SMOOTHING * (observed - current)
        self._ratios[model] = min(_MAX_RATIO, max(_MIN_RATIO, blended))

    def estimate(self, event: Event, model: str | None = None) -> int:
        """Tokens of what the model would see of this event (0 for bookkeeping events)."""
        ratio = self.ratio(model)
        if isinstance(event, Message):
            return ITEM_OVERHEAD + sum(_part_tokens(part, ratio) for part in event.content)
        if isinstance(event, ToolCall):
            return ITEM_OVERHEAD + text_tokens(event.name, ratio) + text_tokens(event.arguments, ratio)
        if isinstance(event, ToolResult):
            return ITEM_OVERHEAD + text_tokens(event.output, ratio)
        if isinstance(event, Reasoning):
            return ITEM_OVERHEAD + text_tokens(event.text or "", ratio) + text_tokens(str(event.data), ratio)
        if isinstance(event, Compaction):
            return ITEM_OVERHEAD + text_tokens(SUMMARY_HEADER + event.summary, ratio) if event.summary else 0
        if isinstance(event, ConfigChange):
            return 0  # the view counts the configuration in force, not each change
        return 0


def _part_tokens(part: TextPart | ImagePart | FilePart, ratio: float) -> int:
    if isinstance(part, TextPart):
        return text_tokens(part.text, ratio)
    if isinstance(part, ImagePart):
        return IMAGE_TOKENS
    return text_tokens(part.data or "", ratio) + ITEM_OVERHEAD
