"""Checking a model's summary against what its span must keep, before it replaces the span.

Any answer used to be accepted; "Noted." replaced a span full of rules. Now a summary is judged against the span:
empty or over its budget, it is replaced; when the span stated things worth carrying (statements of the carried
state, identifiers in its messages) and the summary mentions none of them, it is generic and replaced; when it
mentions some, the identifiers it left out are added under their own heading (completed). The carried state is put
in front of whatever is used, so a summary can never drop it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..events import CarriedFact, Item, Message, TextPart
from ..view import text_tokens
from ._state import identifiers

_MAX_LISTED = 60


@dataclass(frozen=True, slots=True)
class Verdict:
    text: str | None
    """The summary to use (completed if need be), or None when it must be replaced by the digest."""
    check: str


def span_identifiers(items: Sequence[Item]) -> list[str]:
    """Identifiers the messages of a span state (tool outputs are left to recall: they are masked, not carried)."""
    found: dict[str, None] = {}
    for item in items:
        if isinstance(item, Message) and item.role in ("user", "assistant"):
            text = "\n".join(p.text for p in item.content if isinstance(p, TextPart))
            for token in identifiers(text):
                if not (token.isdigit() and len(token) < 3):  # "step 3" names nothing worth carrying
                    found.setdefault(token, None)
    return list(found)


def check_summary(
    text: str, *, span_facts: Sequence[CarriedFact], wanted: Sequence[str], max_tokens: int, ratio: float
) -> Verdict:
    """Accept, complete or reject a model summary of a span whose statements are `span_facts` and whose messages
    name `wanted`."""
    if not text.strip():
        return Verdict(None, "replaced: the summariser returned an empty summary")
    size = text_tokens(text, ratio)
    if size > max_tokens:
        return Verdict(None, f"replaced: the summary (~{size} tokens) exceeds its {max_tokens}-token budget")
    low = text.lower()
    mentioned = [token for token in wanted if token.lower() in low]
    facts_named = [f for f in span_facts if any(word in low for word in f.key.split() if len(word) > 3)]
    if (span_facts or wanted) and not mentioned and not facts_named:
        return Verdict(None, "replaced: the summary is generic (it names nothing the folded span stated)")
    missing = [token for token in wanted if token.lower() not in low]
    if not missing:
        return Verdict(text, "accepted")
    added = f"{text}\n## Identifiers the summary left out\n"
    listed: list[str] = []
    for token in missing[:_MAX_LISTED]:
        if text_tokens(added + ", ".join([*listed, token]), ratio) > max_tokens:
            break
        listed.append(token)
    if not listed:
        return Verdict(text, f"accepted: {len(missing)} identifiers left out, no room to add them")
    return Verdict(added + ", ".join(listed), f"completed: added {len(listed)} of {len(missing)} missing identifiers")
