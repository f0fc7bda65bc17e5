"""The deterministic part of a compaction: which items are protected, which form the tail, what gets folded."""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass

from ..events import Compaction, Item, Message, SeqRange, ToolCall, ToolResult
from ..view import View
from ..view._fold import masked_tokens
from ._policy import CompactionPolicy


@dataclass(slots=True)
class Partition:
    protected: list[int]
    middle: list[int]
    tail: list[list[int]]
    """Turn groups of the verbatim tail, oldest first."""


def cost(view: View, seq: int, masked: set[int]) -> int:
    item = view.items[seq]
    return masked_tokens(item) if seq in masked and isinstance(item, ToolResult) else item.tokens


def turn_groups(items: dict[int, Item]) -> list[list[int]]:
    """Items grouped by turn; a user message inside a turn starts a new group too.

    One input can carry a whole history (the first request of a proxy client that already has one, or a stateless
    Responses call whose input is everything so far): every user message in it begins a turn of that history, so
    the input folds like a stored conversation, and only its newest turn must stay verbatim.

    A tool result never starts a group: it stays with the group of its call. A call the caller runs itself (a
    server's function tool) ends its turn, and its result arrives as the next turn's input; were the two in
    different groups, a compaction could fold the call and keep its result.
    """
    groups: list[list[int]] = []
    previous: object = object()
    for seq, item in items.items():
        key = item.turn_id
        starts = key != previous or (isinstance(item, Message) and item.role == "user")
        if starts and groups and isinstance(item, ToolResult):
            groups[-1].append(seq)  # with its call; what follows it in its own turn starts that turn's group
            continue
        if starts or not groups:
            groups.append([])
        groups[-1].append(seq)
        previous = key
    return groups


def protected_seqs(view: View, policy: CompactionPolicy) -> set[int]:
    """Instructions, pins, and the head: the first `head_items` items, extended to the first user message (the
    task as it was first stated) and so that it never splits a tool batch from its results. Tool results in the
    head are protected from folding, not from masking."""
    protected = {seq for seq, item in view.items.items() if isinstance(item, Message) and item.role in _KEEP_ROLES}
    protected |= view.pinned
    seqs = list(view.items)
    end = min(policy.head_items, len(seqs))
    if end:
        first_user = next(
            (n for n, seq in enumerate(seqs) if _is_user(view.items[seq])),
            end - 1,
        )
        end = max(end, first_user + 1)
    open_calls: set[str] = set()
    index = 0
    while index < end or (open_calls and index < len(seqs)):
        item = view.items[seqs[index]]
        if isinstance(item, ToolCall):
            open_calls.add(item.call_id)
        elif isinstance(item, ToolResult):
            open_calls.discard(item.call_id)
        protected.add(seqs[index])
        index += 1
    return protected


_KEEP_ROLES = ("system", "developer")


def _is_user(item: Item) -> bool:
    return isinstance(item, Message) and item.role == "user"


def partition(view: View, policy: CompactionPolicy, tail_budget: int) -> Partition:
    protected = protected_seqs(view, policy)
    groups = [[seq for seq in group if seq not in protected] for group in turn_groups(view.items)]
    groups = [group for group in groups if group]
    tail = groups[-policy.tail_turns :]
    while len(tail) > 1 and sum(view.items[seq].tokens for group in tail for seq in group) > tail_budget:
        tail = tail[1:]
    in_tail = {seq for group in tail for seq in group}
    middle = [seq for seq in view.items if seq not in protected and seq not in in_tail]
    return Partition(sorted(protected), middle, tail)


def ranges(view: View, folded: Iterable[int]) -> list[SeqRange]:
    """Runs of folded items, in view order, broken wherever a kept item sits between them."""
    fold = set(folded)
    runs: list[SeqRange] = []
    start = last = None
    for seq in view.items:
        if seq in fold:
            if start is None:
                start = seq
            last = seq
        elif start is not None and last is not None:
            runs.append((start, last))
            start = last = None
    if start is not None and last is not None:
        runs.append((start, last))
    return runs


def merge(*range_lists: Iterable[SeqRange], staying: Iterable[int] = ()) -> list[SeqRange]:
    """The ranges joined where they touch, or where no item `staying` in the view sits between them.

    What else lies between (turn markers, usage, the previous compaction, items of failed turns) is not in the
    view either way; joining across it keeps `covers` a few ranges long, where it would otherwise gain one per
    compaction and make each compaction event, and the replay of a long log, grow with the log.
    """
    held = sorted(staying)
    merged: list[SeqRange] = []
    for start, end in sorted(r for ranges_ in range_lists for r in ranges_):
        if merged and (start <= merged[-1][1] + 1 or _none_between(held, merged[-1][1], start)):
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _none_between(held: list[int], after: int, before: int) -> bool:
    i = bisect.bisect_right(held, after)
    return i == len(held) or held[i] >= before


def simulate(view: View, compaction: Compaction) -> int:
    """Estimated tokens of the view once `compaction` is applied, without touching `view`."""
    trial = View()
    trial._restore(compaction, view.sources(), view.summary)
    return trial.estimated_tokens
