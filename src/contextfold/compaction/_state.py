"""The carried state: the statements a fold must not lose, kept near-verbatim and keyed so newer ones supersede.

From each folded span, the sentences of user messages (and the decisions in assistant messages) are sorted into
kinds by how they are worded in plain English (modal verbs for rules, a limit word next to a number for
constraints, "prefer"/"rather" for preferences, and so on), never by labels a test or a user might put in front of
them. Each statement is keyed by what it is about: its content words, stemmed, without the values (numbers,
identifiers, dates) and without the words that only say how it is meant ("never", "actually", "now"). A later
statement whose key overlaps an earlier one's enough supersedes it: the earlier stays in the log and in recall, but
leaves the state. The state lives on the compaction event, so replay and load get it back exactly.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence

from ..events import CarriedFact, Item, Message, TextPart
from ..view import text_tokens

STATE_HEADER = "## Carried state (still in force; a later message in this conversation overrides any of it)"

_KINDS = ("rule", "constraint", "preference", "decision", "goal", "fact")
"""Rendering order; eviction (when the state outgrows its room) takes the other end first."""

_SENTENCE = re.compile(r"(?<=[.!?;])\s+(?=[A-Z\"'(\[`])|\n+")
# Each alternative that runs over a stretch of characters starts only where its stretch starts (the lookbehinds):
# tried at every position of a long token, `\S+@` or `[\w.~-]*/` back off over the rest of it each time, and a 5 KB
# token without a space took seconds to scan. A version comes before a file name, or `v1.2.3` would be `v1.2`.
_IDENTIFIER = re.compile(
    r"https?://\S+|(?<![^\s@])[^\s@]+@[^\s@]+\.\w+|(?<![\w.~-])[\w.~-]*/[\w./-]+|\bv?\d+(?:[.:,/-]\d+)+\b"
    r"|\b\w+\.\w{1,5}\b|\b\d+\b"
    r"|\b[a-z]+_[a-z0-9_]+\b|\b[a-z]+[A-Z]\w*\b|\b[A-Z]{2,}[\w-]*\b|`[^`]+`|\"[^\"]{2,60}\""
)

_RULE = re.compile(
    r"\b(never|always|must|mustn't|shall|should|shouldn't|don't|do not|does not|doesn't|avoid|forbidden|"
    r"not allowed|no one|nobody|under no circumstances|make sure|ensure|required|mandatory|prohibited|"
    r"not permitted|only ever|refrain|off limits|off the table|stay away from|allowed to|permitted to|fine to|"
    r"circumstances|"
    r"okay to|ok to|free to|can now|may now|no longer need|is banned|are banned|"
    r"(?:is|are) (?:now )?(?:fine|okay|ok|allowed|permitted|acceptable))\b"
)
_PREFERENCE = re.compile(
    r"\b(prefer|preferably|preferred|i like|i'd like|i would like|i'd rather|i would rather|rather than|"
    r"preference|i love|i hate|i dislike|my favou?rite|works? best for me|i'm a fan of|instead of)\b"
)
_DECISION = re.compile(
    r"\b(decided|we'll go with|we will go with|going with|go with|let's use|let's go|we chose|chosen|"
    r"settled on|agreed|the plan is|we're using|we are using|switch(?:ed)? to|picked|opted|will use|"
    r"i'll use|we'll use|sticking with|stick with)\b"
)
_LIMIT = re.compile(
    r"\b(at most|at least|no more than|no less than|not more than|fewer than|less than|more than|up to|"
    r"maximum|minimum|max|min|limit|limits|limited|cap|capped|budget|deadline|due|by|before|until|no later|"
    r"as (?:long|large|many|much|big|high|low|small|few) as|"
    r"within|under|below|above|over|exceed|exceeds|ceiling|quota|timeout|allowed)\b"
)
_QUANTITY = re.compile(
    r"\d|\b(one|two|three|four|five|six|seven|eight|nine|ten|twelve|fifteen|twenty|thirty|fifty|hundred|"
    r"thousand|million|monday|tuesday|wednesday|thursday|friday|saturday|sunday|january|february|march|april|"
    r"may|june|july|august|september|october|november|december|noon|midnight|tomorrow|tonight)\b"
)
_GOAL_WORD = re.compile(r"\b(goal|goals|aim|aiming|objective|milestone|mission|purpose|focus)\b")
_AMOUNT = re.compile(  # from the start of a run of digits and separators only (see _IDENTIFIER)
    r"(?<![\d,.])[,.]*+\d[\d,.]*+\s*(?:%|percent|[kmgt]i?b|bytes?|ms|s|sec|seconds?|minutes?|mins?|hours?|days?|weeks?|"
    r"words?|lines?|files?|tokens?|requests?|users?|dollars?|euros?|usd|eur|calls?|retries|times|items?|rows?|characters?|chars?)\b"
)
_GOAL = re.compile(
    r"\b(goal|aim|aiming|objective|purpose|mission|(?:we|i)(?: \w+)? (?:want|need|aim|hope|plan|intend) to|"
    r"trying to|"
    r"the point is|end result|milestone|currently|right now|at the moment|so far|status|is done|"
    r"are done|in progress|next step|blocked on|working on|focus|priority)\b"
)
_LINK = re.compile(
    r"\b(is|are|was|were|lives|live|runs|run|sits|uses|use|means|equals|points|has|have|called|named|"
    r"stored|kept|located|listens|set|holds|belongs|owns|owned|maintained|becomes|became|moved|changed)\b|[=:]"
)

_DATE = re.compile(
    r"\b(?:january|february|march|april|may|june|july|august|september|october|november|december|monday|"
    r"tuesday|wednesday|thursday|friday|saturday|sunday|tomorrow|tonight|\d{4}-\d\d-\d\d)\b",
    re.IGNORECASE,
)
_NAME = re.compile(r"(?<=[a-z,;] )[A-Z][a-z]+|^[A-Z][a-z]+(?= (?:is|was|are|has|will|owns|runs|leads)\b)")
"""A proper noun: a capitalised word inside a sentence, or one that starts it as the subject of a link verb."""
_VALUE = re.compile(r"\d|[/@_.:=<>#$%]")
_FILLER_WORDS = """a an the and or but if then than so to of in on at by for from with without into onto about
    as is are was over under below above before after between through per via across against until within around
    were be been being am it its it's this that these those there here we our us i me my you your they them their he
    she his her what which who whom whose when where why how all any each every some no not nor only own same too
    very can could will would shall should may might must do does did done doing don't doesn't didn't have has had
    having let let's lets get gets got make makes made keep keeps kept go goes going went please just also still
    even ever never always again now anymore longer actually instead correction update updated change changed
    changes changing scratch new newer latest moving forward turns out okay ok right well sure fine really one more
    rather prefer preferably preferred like love hate dislike favourite favorite decided decide agreed chose chosen
    settled plan use using used want wants need needs needed try trying aim goal note noted remember mind heads
    thing things stuff bit lot way ensure sure avoid important circumstance circumstances most least
    rule rules allow allowed permit permitted nobody anything something everything nothing whatever whenever
    however i'd we'll we're i'm i'll you'll it'll that's
    there's here's let's what's"""
_FILLER = frozenset(_FILLER_WORDS.split())


def extract(items: Iterable[Item]) -> list[CarriedFact]:
    """The statements in `items` worth carrying forward, in log order."""
    found: list[CarriedFact] = []
    for item in items:
        if not isinstance(item, Message) or item.redacted or item.role not in ("user", "assistant", "developer"):
            continue
        text = "\n".join(part.text for part in item.content if isinstance(part, TextPart))
        for sentence in _sentences(text):
            kind = classify(sentence)
            if kind is None or (item.role == "assistant" and kind != "decision"):
                continue
            key = subject_key(sentence, deadline=kind == "constraint" and bool(_DATE.search(sentence)))
            if key:
                found.append(CarriedFact(kind=kind, key=key, text=sentence, seq=item.seq))
    return found


def _sentences(text: str) -> list[str]:
    out = []
    for raw in _SENTENCE.split(text):
        sentence = " ".join(raw.split()).lstrip("-*• ").strip()
        if 12 <= len(sentence) <= 400 and not sentence.endswith("?"):
            out.append(sentence)
    return out


def classify(sentence: str) -> str | None:
    """The kind of statement `sentence` is, judged from its wording, or None when it is none of them."""
    low = sentence.lower()
    if _GOAL_WORD.search(low):
        return "goal"
    if (_LIMIT.search(low) and _QUANTITY.search(low)) or (_RULE.search(low) and _AMOUNT.search(low)):
        return "constraint"
    if _RULE.search(low):
        return "rule"
    if _PREFERENCE.search(low):
        return "preference"
    if _DECISION.search(low):
        return "decision"
    if _GOAL.search(low):
        return "goal"
    if _LINK.search(low) and (_IDENTIFIER.search(sentence) or _NAME.search(sentence)):  # the cheap test first
        return "fact"
    return None


def subject_key(sentence: str, *, deadline: bool = False) -> str:
    """What `sentence` is about, as `subject | words | head`: the content words of its grammatical subject (the
    words before its first verb, modal or clause break, when there are any), the content words of the whole
    sentence, each stemmed and sorted, without values and wording cues, and the subject's last word (its head noun:
    "the staging database password" is about a password, "the staging database" about a database).

    Values are what a later statement about the same thing changes: numbers, dates, identifiers (anything with a
    digit, a path or an underscore) and proper nouns (capitalised words inside the sentence, or a name that is the
    sentence's subject). A constraint on a date is about a deadline, however it is worded ("finish by May 3")."""
    subject: set[str] = set()
    order: list[str] = []  # the subject's words as written: its last is the head noun ("database password")
    nested = False  # a preposition in the subject ("the focus on the reports page"): no simple head to tell
    words: set[str] = {"deadline"} if deadline else set()
    in_subject = True
    starts_with_name = bool(_NAME.match(sentence))
    for n, raw in enumerate(sentence.split()):
        token = raw.strip(".,;:!?()[]{}\"'`*")
        low = token.lower()
        if in_subject and (low in _PIVOTS or low.endswith("n't")):
            in_subject = False
        value = not token or _VALUE.search(token) or (token[0].isupper() and (n > 0 or starts_with_name))
        if not value and low not in _FILLER:
            for part in re.split(r"[-'/]", low.removesuffix("'s")):
                stem = _stem(part)
                if len(part) >= 3 and part not in _FILLER and stem not in _FILLER and not _QUANTITY.fullmatch(part):
                    words.add(stem)
                    if in_subject:
                        subject.add(stem)
                        order.append(stem)
        if in_subject and low in _PREPOSITIONS:
            nested = True
        if in_subject and raw.endswith((",", ":", ";")) and subject:
            in_subject = False  # a lead-in with no content ("Actually,", "Change of plan:") leaves it open
    if not words:
        return ""
    if in_subject:
        subject, order = set(), []  # no verb or clause break: nothing marks a subject, so the sentence has none
    head = "" if nested else next((word for word in reversed(order) if word in subject), "")
    return " | ".join([" ".join(sorted(subject)), " ".join(sorted(words)), head])


_PIVOT_WORDS = """is are was were be been lives live runs run sits uses means equals points has have stays remains
    moved moves
    becomes became changed changes goes listens belongs holds must should shall can could may might will would need
    needs prefer prefers like likes rather want wants love hate never always don't do does please owns leads allowed
    permitted free fine okay ok welcome"""
_PIVOTS = frozenset(_PIVOT_WORDS.split())
_PREPOSITIONS = frozenset(["for", "of", "on", "in", "at", "with", "to", "from", "about", "into", "under", "over", "by"])


def _stem(word: str) -> str:
    for suffix, keep in (
        ("ies", "y"),
        ("ing", ""),
        ("ed", ""),
        ("ches", "ch"),
        ("shes", "sh"),
        ("xes", "x"),
        ("s", ""),
    ):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            return word[: -len(suffix)] + keep
    return word


def _parts(fact: CarriedFact) -> tuple[set[str], set[str], str]:
    subject, words, head = ([*fact.key.split(" | "), "", ""])[:3]
    return set(subject.split()), set(words.split()), head


def supersedes(newer: CarriedFact, older: CarriedFact) -> bool:
    """Whether `newer` is about the same thing as `older` (and so replaces it).

    Two statements of one kind with the same subject are; so is one whose subject is all there in the other (at
    least two words of it: "force-pushing to main is fine now" after "never force-push to the main branch"); and
    two that share most of their content words."""
    (sa, wa, ha), (sb, wb, hb) = _parts(newer), _parts(older)
    same = newer.kind == older.kind
    shared, smaller = len(wa & wb), min(len(wa), len(wb))
    if sa and sb and same:
        common = len(sa & sb)
        # Goals and preferences are about their subject ("for the exporter, the goal is ..."); what they say of it
        # is the value. Other statements of one-word subjects must share more than the subject.
        loose = newer.kind in ("goal", "preference") or shared >= max(2, smaller / 2)
        if common >= 2 and common / min(len(sa), len(sb)) >= 0.75 and (ha == hb or not ha or not hb):
            return True
        if common == 1 and (max(len(sa), len(sb)) <= 2 or min(len(sa), len(sb)) == 1) and loose:
            return True  # "answers should stay below 150 words", "the worker's memory budget is 1 GB"
    for subject, other_subject, other_words in ((sa, sb, wb), (sb, sa, wa)):
        if same and subject and not other_subject and subject <= other_words:
            return True
    if smaller == 0 or shared == 0:
        return False
    if shared >= 3 and shared >= 0.8 * smaller:
        return True  # one restates nearly everything the other is about
    if same and not sa and not sb and shared >= 2 and shared >= 0.6 * smaller:
        return True  # two rules (or two preferences...) about one action, in different words around it
    for subject, other_words in ((sa, wb), (sb, wa)):
        if subject and len(subject & other_words) / len(subject) < 0.6:
            return False  # about something the other barely mentions: what they share is value-like words
    if smaller == 1:
        return shared == 1 and max(len(wa), len(wb)) <= 3
    return shared >= 2 and shared / smaller >= 0.75


def merge(state: Sequence[CarriedFact], new: Iterable[CarriedFact]) -> list[CarriedFact]:
    """`state` with `new` folded in, in seq order: each statement drops the older ones it supersedes."""
    merged = list(state)
    for fact in sorted(new, key=lambda f: f.seq):
        merged = [old for old in merged if not (old.seq <= fact.seq and supersedes(fact, old))]
        merged.append(fact)
    return merged


def overridden(state: Sequence[CarriedFact], later: Iterable[CarriedFact]) -> list[CarriedFact]:
    """`state` without the statements that `later` ones (still shown verbatim) supersede."""
    newer = list(later)
    return [old for old in state if not any(f.seq > old.seq and supersedes(f, old) for f in newer)]


def scrub(text: str, superseded: Iterable[CarriedFact]) -> str:
    """`text` with every superseded statement replaced by a marker, so a summary or digest that quotes the folded
    span never shows an old value as if it still held (the statement itself stays in the log and in recall)."""
    for fact in superseded:
        probe = fact.text[:40]  # a digest clips its lines: the statement may be cut short there
        start = text.find(probe)
        while start >= 0:
            if text.startswith(fact.text, start):
                end = start + len(fact.text)
            else:
                end = text.find("\n", start)
                end = len(text) if end < 0 else end
            text = text[:start] + "[superseded]" + text[end:]
            start = text.find(probe, start + len("[superseded]"))
    return text


def render(state: Sequence[CarriedFact]) -> str:
    """The state as the summary shows it: one line per statement, grouped by kind, oldest first in each."""
    if not state:
        return ""
    order = {kind: n for n, kind in enumerate(_KINDS)}
    lines = [STATE_HEADER]
    for fact in sorted(state, key=lambda f: (order.get(f.kind, len(order)), f.seq)):
        lines.append(f"- [{fact.kind}] {fact.text}")
    return "\n".join(lines)


def fit(state: Sequence[CarriedFact], max_tokens: int, chars_per_token: float) -> list[CarriedFact]:
    """The state cut to `max_tokens` when rendered: plain facts go first, then goals, ..., rules last; oldest first
    within a kind (what recall still finds)."""
    kept = list(state)
    order = {kind: n for n, kind in enumerate(reversed(_KINDS))}
    victims = sorted(kept, key=lambda f: (order.get(f.kind, -1), f.seq))
    while kept and text_tokens(render(kept), chars_per_token) > max_tokens:
        victim = victims.pop(0)
        kept.remove(victim)
    return kept


def split_summary(text: str | None) -> tuple[str, str]:
    """A summary's text as (its carried-state block, the rest)."""
    if not text:
        return "", ""
    if not text.startswith(STATE_HEADER):
        return "", text
    block, _, rest = text.partition("\n\n")
    return block, rest


def identifiers(text: str) -> list[str]:
    """The identifiers (paths, numbers, versions, names with digits or underscores, URLs) in `text`, in order."""
    return list(_cached_identifiers(text) if len(text) <= _CACHED_TEXT else _scan_identifiers(text))


_CACHED_TEXT = 16_384
"""Texts up to this long are cached: 2,048 of them hold at most 32 MB, whatever the traffic (memory stays flat)."""


def _scan_identifiers(text: str) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for match in _IDENTIFIER.finditer(text):
        token = match.group(0).strip('"`.,;:()[]')
        if len(token) >= 2:
            seen.setdefault(token, None)
    return tuple(seen)


# Cached by text (a message's text is immutable): the scan is ~0.1 ms a message, and the same messages are scanned
# again whenever a compaction is planned again over them (a plan the head moved under, a recomputed summary).
_cached_identifiers = functools.lru_cache(maxsize=2048)(_scan_identifiers)
