"""The compactor: a function from (view, budget, policy) to a compaction event, or nothing.

Tiers run cheapest first and stop once the view is under the target:
1. mask old tool results (the tool's own compact summary, or a pointer to recall the output);
2. summarise everything between the protected head and the verbatim tail with a model, over the previous summary;
3. when the summariser fails, times out, or answers empty or too long, a deterministic digest instead.
The tail gives up its oldest turns, and as a last resort its tool outputs are masked, until the view fits. If even
the instructions, pins and the latest turn exceed the budget, `ContextOverflowError`: nothing is sent over budget.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import msgspec

from .._errors import ContextOverflowError
from ..events import CarriedFact, Compaction, Item, TokenUsage, ToolResult, Trigger
from ..models import Model
from ..view import TokenEstimator, View
from ..view._fold import masked_tokens
from ..view._tokens import ITEM_OVERHEAD, SUMMARY_HEADER, text_tokens
from . import _state
from ._check import check_summary, span_identifiers
from ._plan import cost, merge, partition, protected_seqs, ranges, simulate
from ._policy import CompactionPolicy
from ._summary import digest, summarise

_MIN_SUMMARY_TOKENS = 64


async def compact(
    view: View,
    *,
    budget: int,
    policy: CompactionPolicy,
    summariser: Model | None,
    estimator: TokenEstimator,
    trigger: Trigger = "auto",
    instructions: str | None = None,
    withdrawn: Sequence[Item] = (),
) -> Compaction | None:
    """Plan and run one compaction of `view`. Returns the (unappended) event, or None when none is due or possible.

    `withdrawn` holds the items of a summary that a deletion withdrew, so a recompute can summarise them again.
    """
    started = time.perf_counter()
    before = view.estimated_tokens + max(view.offset, 0)
    stale = view.summary_stale
    if trigger == "auto" and not compaction_due(view, budget=budget, policy=policy):
        return None
    target = int(policy.target * budget)
    # A compaction aims at the target; when what it must carry needs more, it may land up to halfway to the
    # threshold, which still leaves a gap for turns to accumulate before the next one (hysteresis).
    roomy = max(target, int((policy.target + policy.threshold) / 2 * budget))
    ratio = estimator.ratio(summariser.name if summariser else None)
    active = view.active_summary()
    prior_state = list(active.carried) if active else []
    protected = protected_seqs(view, policy)
    protected_cost = sum(cost(view, seq, view.masked) for seq in protected)
    # Room planned for the carried state before the tail is chosen: what it would need were everything but the
    # protected items folded (an upper bound), within what the budget can give it.
    foldable = [view.items[seq] for seq in view.items if seq not in protected]
    state_need = _state_tokens(_state.merge(prior_state, _state.extract([*withdrawn, *foldable])), ratio)
    base = view.fixed_tokens + protected_cost
    state_room = min(state_need, max(0, roomy - base - _MIN_SUMMARY_TOKENS) // 2)
    tail_budget = int(min(policy.tail_share * target, target - base - state_room - _MIN_SUMMARY_TOKENS))
    part = partition(view, policy, max(0, tail_budget))

    # Tier 1: mask old tool results, oldest first (those of the head too: it keeps its messages verbatim, not
    # the outputs of its first tool calls).
    masked = set(view.masked)
    estimate = before
    head_results = [seq for seq in part.protected if seq not in view.pinned]
    for seq in [*head_results, *part.middle]:
        if estimate <= target:
            break
        item = view.items[seq]
        if policy.masking and isinstance(item, ToolResult) and seq not in masked and masked_tokens(item) < item.tokens:
            masked.add(seq)
            estimate -= item.tokens - masked_tokens(item)
    summarise_now = trigger == "manual" or stale or estimate > target

    def event(**fields: Any) -> Compaction:
        return Compaction(
            trigger=trigger,
            pinned=sorted(view.pinned),
            open_turns=dict(view.open_turns),
            based_on_head=view.head,
            instructions=instructions,
            totals=view.totals,
            tokens_before=before,
            seq=view.head + 1,
            **fields,
        )

    if not summarise_now or not (part.middle or withdrawn):
        # Masking alone (a stale summary with nothing left to summarise simply leaves the view).
        masking = event(
            strategy="mask",
            kept=view.kept_seqs,
            masked=sorted(masked),
            covers=list(view.covers) if active else [],
            summary_seq=active.seq if active else None,
        )
        masking = _finish(view, masking, budget, estimator, started)
        return masking if set(masking.masked) != view.masked or stale else None

    # Tiers 2 and 3: fold the middle into a summary built on the previous one, behind the carried state.
    folded = set(part.middle)
    span = [*withdrawn, *(view.items[seq] for seq in part.middle)]
    previous = active.summary if active else None
    span_facts = _state.extract(span)
    staying = [view.items[seq] for seq in view.items if seq not in folded]
    state = _state.overridden(_state.merge(prior_state, span_facts), _state.extract(staying))
    superseded = [fact for fact in [*prior_state, *span_facts] if fact not in state]
    fixed = view.fixed_tokens + sum(cost(view, s, masked) for s in protected)
    fixed += sum(cost(view, s, masked) for g in part.tail for s in g)
    state = _state.fit(state, max(0, roomy - fixed - _MIN_SUMMARY_TOKENS), ratio)
    state_text = _state.render(state)
    state_cost = text_tokens(state_text + "\n\n", ratio) if state_text else 0
    # The summary is sized from its span (about a tenth of it, never below the minimum, at most the policy's
    # summary share), within the room left under the target, or under the roomy mark when the state took it.
    span_tokens = sum(item.tokens for item in span)
    room = target - fixed - state_cost
    if room < _MIN_SUMMARY_TOKENS:
        room = max(_MIN_SUMMARY_TOKENS, roomy - fixed - state_cost)
    need = min(int(policy.summary_share * budget), max(_MIN_SUMMARY_TOKENS * 2, span_tokens // 10))
    summary_max = max(_MIN_SUMMARY_TOKENS, min(room, need))
    if policy.summary_max_tokens is not None:  # the configured output cap
        summary_max = min(summary_max, max(_MIN_SUMMARY_TOKENS, policy.summary_max_tokens))
    text_budget = summary_max - ITEM_OVERHEAD - text_tokens(SUMMARY_HEADER, ratio)
    text: str | None = None
    usage: TokenUsage | None = None
    error: str | None = None
    check: str | None = None
    if summariser is None:
        error = "no summariser model is configured"
    else:
        try:
            text, tokens_in, tokens_out = await summarise(
                summariser,
                span,
                previous,
                instructions,
                max_tokens=text_budget,
                input_tokens=policy.summariser_input_tokens,
                time_limit=policy.summariser_timeout,
            )
            usage = TokenUsage(tokens_in, tokens_out)
            wanted = [t for t in span_identifiers(span) if t not in state_text]
            verdict = check_summary(text, span_facts=span_facts, wanted=wanted, max_tokens=text_budget, ratio=ratio)
            text, check = verdict.text, verdict.check
            if text is None:
                error = check.removeprefix("replaced: ")
        except TimeoutError:
            error = f"the summariser timed out after {policy.summariser_timeout:g}s"
        except Exception as exc:  # any failure of the summariser must fall back, never brick the conversation
            error = f"the summariser failed: {type(exc).__name__}: {exc}"
    if error is not None:
        text = digest(span, previous, error, text_budget, ratio)
        check = check or f"replaced: {error}"
    assert text is not None
    text = _state.scrub(text, superseded)  # a quoted old value must not read as current
    prior_covers = view.covers if (active or stale) else []
    folding = event(
        strategy="summary" if error is None else "fallback",
        kept=[seq for seq in view.kept_seqs if seq not in folded],
        masked=sorted(masked - folded),
        folded=ranges(view, folded),
        covers=merge(prior_covers, ranges(view, folded), staying=[seq for seq in view.items if seq not in folded]),
        summary=f"{state_text}\n\n{text}" if state_text else text,
        previous=active.id if active else None,
        model=summariser.name if summariser else None,
        usage=usage,
        error=error,
        carried=state,
        check=check,
    )
    return _finish(view, folding, budget, estimator, started)


def _state_tokens(state: list[CarriedFact], ratio: float) -> int:
    return text_tokens(_state.render(state) + "\n\n", ratio) if state else 0


def compaction_due(view: View, *, budget: int, policy: CompactionPolicy, soft: bool = False) -> bool:
    """Whether an automatic compaction would run: the view is over the policy's threshold, or its summary stale.

    `soft=True` asks the background's question instead: whether the view is past the soft threshold (a turn that
    ends there schedules a compaction off the request path; see `runtime._compactor`).
    """
    threshold = policy.soft if soft else policy.threshold
    return view.estimated_tokens + max(view.offset, 0) > threshold * budget or view.summary_stale


def _finish(view: View, event: Compaction, budget: int, estimator: TokenEstimator, started: float) -> Compaction:
    event = msgspec.structs.replace(event, tokens=estimator.estimate(event, event.model))
    after = simulate(view, event)
    if after > budget:
        # Last resort: mask every tool output still shown in full, newest last, until the view fits.
        extra = sorted(
            seq
            for seq in set(event.kept) - set(event.masked) - view.pinned
            if isinstance(view.items.get(seq), ToolResult)
        )
        masked = set(event.masked)
        for seq in extra:
            if after <= budget:
                break
            masked.add(seq)
            event = msgspec.structs.replace(event, masked=sorted(masked))
            after = simulate(view, event)
    if after > budget:
        raise ContextOverflowError(
            f"what must stay in the window (instructions, pinned items and the latest turn) needs ~{after} tokens, "
            f"over the {budget}-token budget; shorten the system prompt or the input, unpin items, "
            "or use a model with a larger context window"
        )
    duration = (time.perf_counter() - started) * 1000
    return msgspec.structs.replace(event, tokens_after=after, duration_ms=round(duration, 3), seq=0)
