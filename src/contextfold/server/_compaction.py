"""The compaction policy a server runs: globally (the `compact_*` keys, flags and environment variables), per model
(a `[models.compaction]` table), and per request (`context_management`, within limits).

    compact_threshold = 0.8          # compact above this share of the budget
    compact_target = 0.5             # ... down to this share
    compact_tail_turns = 4           # the newest turns kept verbatim
    compact_head_items = 2           # the first items kept verbatim
    compact_masking = true           # mask old tool outputs before summarising
    compact_summariser = "self"      # "self" (the serving model), "none" (deterministic only) or a served model
    compact_summariser_timeout = 120 # seconds
    compact_summary_max_tokens = 0   # the summary's output cap (0: the policy's share of the budget)

A request's `context_management` is OpenAI's list of `{"type": "compaction", "compact_threshold": TOKENS}` entries;
contextfold reads the same entry's `target`, `tail_turns`, `head_items`, `masking`, `summariser` ("none" or
"default"), `summariser_timeout` and `summary_max_tokens` too. A value out of its limits is refused with a 400 naming
the field (`context_management[0].tail_turns`); a request can make the summariser stricter (shorter timeout, smaller
cap, none at all), never costlier than the server allows. A request that states its own threshold
(`compact_threshold` or `threshold`) is compacted inline only, in the response that crosses it, as OpenAI's
contract has it: never earlier, in the background (see `runtime._compactor`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .._errors import InvalidRequestError
from ..compaction import CompactionPolicy

SELF, NONE = "self", "none"
MAX_TURNS = 64
"""The most head items or tail turns a request may ask to keep verbatim."""


@dataclass(frozen=True, slots=True)
class CompactionSettings:
    threshold: float = 0.8
    target: float = 0.5
    tail_turns: int = 4
    head_items: int = 2
    masking: bool = True
    summariser: str = SELF
    """`self`: the serving model writes the summaries; `none`: deterministic digests only; else a served model."""
    summariser_timeout: float = 120.0
    summary_max_tokens: int | None = None
    """The summary's output cap in tokens (None: the policy's share of the budget)."""

    def policy(self) -> CompactionPolicy:
        return CompactionPolicy(
            threshold=self.threshold,
            target=self.target,
            head_items=self.head_items,
            tail_turns=self.tail_turns,
            masking=self.masking,
            summariser_timeout=self.summariser_timeout,
            summary_max_tokens=self.summary_max_tokens,
        )

    def overlay(self, values: dict[str, Any]) -> CompactionSettings:
        """These settings with a model's own (already checked one by one)."""
        return dataclasses.replace(self, **values)

    def describe(self, budget: int, summariser: str | None = None) -> dict[str, Any]:
        """What is in force, as the context report and `doctor` show it."""
        return {
            "threshold": self.threshold,
            "target": self.target,
            "trigger_tokens": int(self.threshold * budget),
            "target_tokens": int(self.target * budget),
            "tail_turns": self.tail_turns,
            "head_items": self.head_items,
            "masking": self.masking,
            "summariser": summariser if summariser is not None else self.summariser,
            "summariser_timeout": self.summariser_timeout,
            "summary_max_tokens": self.summary_max_tokens,
        }

    def describe_background(self, budget: int, *, enabled: bool) -> dict[str, Any] | None:
        """Where compaction off the request path starts (None: it is off, and nothing acts on a soft threshold)."""
        soft = self.policy().soft
        return {"soft_threshold": round(soft, 4), "soft_tokens": int(soft * budget)} if enabled else None


@dataclass(frozen=True, slots=True)
class RequestPolicy:
    policy: CompactionPolicy
    deterministic: bool
    """The request asked for no summariser (`summariser: "none"`)."""


def request_policy(settings: CompactionSettings, entries: Sequence[Any] | None, budget: int) -> RequestPolicy:
    """The policy for one request: the model's settings with the request's `context_management` entries on top."""
    values: dict[str, Any] = {}
    deterministic = settings.summariser == NONE
    for index, entry in enumerate(entries or ()):
        field = f"context_management[{index}]"
        given = {k: v for k, v in _fields(entry).items() if v is not None and k != "type"}
        if "compact_threshold" in given and "threshold" in given:
            raise InvalidRequestError(
                f"{field} sets both compact_threshold (tokens) and threshold (a share of the budget); keep one",
                param=f"{field}.threshold",
            )
        if "compact_threshold" in given:
            tokens = given.pop("compact_threshold")
            if not 1 <= tokens < budget:
                raise _refuse(
                    field, "compact_threshold", tokens, f"a number of tokens from 1 to {budget - 1}, below the budget"
                )
            # OpenAI's threshold is in tokens; a very low one still leaves room for the compacted view.
            values["threshold"] = min(0.95, max(0.05, tokens / budget))
            values["target"] = min(values.get("target", settings.target), values["threshold"] * 0.6)
        for key, value in given.items():
            values[key] = _checked(field, key, value, settings)
        if values.get("summariser") == NONE:
            deterministic = True
        values.pop("summariser", None)
    threshold = values.get("threshold", settings.threshold)
    target = values.get("target", settings.target)
    if not target < threshold:
        raise InvalidRequestError(
            f"context_management: target {target} must be below threshold {threshold} (the gap keeps compactions "
            "rare); lower target or raise threshold",
            param="context_management",
        )
    policy = settings.overlay(values).policy()
    if "threshold" in values:
        # The request says when to compact: the response that crosses it carries the compaction (OpenAI's contract,
        # which a client that keeps its own items relies on), so none is made earlier in the background.
        policy = dataclasses.replace(policy, background=False)
    return RequestPolicy(policy, deterministic)


def _fields(entry: Any) -> dict[str, Any]:
    if isinstance(entry, dict):
        return dict(entry)
    dumped: dict[str, Any] = entry.model_dump()
    return dumped


def _checked(field: str, key: str, value: Any, settings: CompactionSettings) -> Any:
    if key == "threshold":
        if not 0 < value <= 1:
            raise _refuse(field, key, value, "a share of the budget above 0 and at most 1")
    elif key == "target":
        if not 0 < value < 1:
            raise _refuse(field, key, value, "a share of the budget between 0 and 1")
    elif key == "tail_turns":
        if not 1 <= value <= MAX_TURNS:
            raise _refuse(field, key, value, f"a number of turns from 1 to {MAX_TURNS}")
    elif key == "head_items":
        if not 0 <= value <= MAX_TURNS:
            raise _refuse(field, key, value, f"a number of items from 0 to {MAX_TURNS}")
    elif key == "summariser":
        if value not in (NONE, "default"):
            raise _refuse(field, key, value, '"none" (deterministic digests only) or "default" (the server\'s choice)')
    elif key == "summariser_timeout":
        if not 0 < value <= settings.summariser_timeout:
            raise _refuse(
                field, key, value, f"seconds above 0 and at most the server's {settings.summariser_timeout:g}"
            )
    elif key == "summary_max_tokens":
        cap = settings.summary_max_tokens
        if value < 1 or (cap is not None and value > cap):
            raise _refuse(
                field, key, value, f"a number of tokens from 1 to {cap}" if cap else "a positive number of tokens"
            )
    return value


def _refuse(field: str, key: str, value: Any, accepted: str) -> InvalidRequestError:
    return InvalidRequestError(f"{field}.{key} must be {accepted}, got {value!r}", param=f"{field}.{key}")
