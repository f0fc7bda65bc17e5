"""When to compact, how far, and what to protect; and the record a compaction returns."""

from __future__ import annotations

from dataclasses import dataclass

from .._errors import InvalidRequestError


@dataclass(frozen=True, slots=True)
class CompactionPolicy:
    """Trigger above `threshold` x budget, compact down to `target` x budget (the gap keeps compactions rare).

    `head_items` first items and the last `tail_turns` turns stay verbatim; the tail gives up its oldest turn while it
    alone takes more than `tail_share` of the target. A summary takes what its span needs (about a tenth of it), up
    to `summary_share` of the budget and at most `summary_max_tokens` when set; the carried state in front of it
    takes what it holds, within the room up to halfway between target and threshold. `masking=False` skips the
    first tier (old tool outputs stay whole until the summary folds them; only a view that would not fit otherwise
    still has outputs masked).

    `soft_threshold` (a share of the budget, above `target`, at most `threshold`) is where a compaction starts in
    the background once an answer leaves the view between it and `threshold`, so the request that would have
    crossed `threshold` usually finds the view already compacted (a view past `threshold` is compacted inline by
    the next request, as without it). None: a tenth of the budget below `threshold`, and never more than half the
    gap to `target` (0.7 with the defaults). A tenth is room for several turns of a normal conversation at any
    window of 32k tokens or more, so the answer that enters the band is rarely the one that leaves it, and the next
    request fits under the trigger while the compaction runs; half the gap bounds the cost of starting early: the
    view grows at least half as far between compactions as it would inline-only (two thirds with the defaults), so
    compactions are at most twice as frequent (1.5x with the defaults). `background=False` keeps this policy's
    compactions inline (a request that states its own threshold, OpenAI's `context_management`, is answered with
    the compaction in the response that crosses it, never one made earlier than asked).
    """

    threshold: float = 0.8
    target: float = 0.5
    head_items: int = 2
    tail_turns: int = 4
    tail_share: float = 0.6
    summary_share: float = 0.15
    summariser_input_tokens: int = 24_000
    summariser_timeout: float = 120.0
    masking: bool = True
    summary_max_tokens: int | None = None
    soft_threshold: float | None = None
    background: bool = True

    @property
    def soft(self) -> float:
        """The soft threshold in force (see the class docs for the default)."""
        if self.soft_threshold is not None:
            return self.soft_threshold
        return self.threshold - min(0.1, (self.threshold - self.target) / 2)

    def __post_init__(self) -> None:
        if not 0 < self.target < self.threshold <= 1:
            raise InvalidRequestError(
                f"compaction policy needs 0 < target < threshold <= 1, got target={self.target}, "
                f"threshold={self.threshold}"
            )
        if self.head_items < 0 or self.tail_turns < 1:
            raise InvalidRequestError(
                f"compaction policy needs head_items >= 0 and tail_turns >= 1, got {self.head_items}, {self.tail_turns}"
            )
        if self.summary_max_tokens is not None and self.summary_max_tokens < 1:
            raise InvalidRequestError(
                f"compaction policy summary_max_tokens must be positive, got {self.summary_max_tokens}"
            )
        if self.soft_threshold is not None and not self.target < self.soft_threshold <= self.threshold:
            raise InvalidRequestError(
                f"compaction policy needs target < soft_threshold <= threshold, got soft_threshold="
                f"{self.soft_threshold} with target={self.target}, threshold={self.threshold}"
            )
        for name in ("tail_share", "summary_share"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise InvalidRequestError(f"compaction policy {name} must be between 0 and 1, got {value}")


@dataclass(frozen=True, slots=True)
class CompactionResult:
    """What a compaction did (or why it did nothing)."""

    compacted: bool
    trigger: str
    messages_before: int
    messages_after: int
    turns_before: int
    turns_after: int
    tokens_before: int
    tokens_after: int
    strategy: str | None = None
    compaction_id: str | None = None
    summary_length: int = 0
    error: str | None = None
