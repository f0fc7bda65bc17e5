"""The guardrail backends on their own: a rule list flags a blocked term wherever it stands as a word, and only
then; a classifier's Llama Guard answer is read strictly (anything but safe/unsafe fails, never passes)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contextfold._errors import ModelResponseError
from contextfold.server.responses._guardrails import ClassifierGuardrail, RuleGuardrail, TurnChecks
from contextfold.server.responses._guardrails_config import GuardrailSpec

_words = st.text(alphabet="abcdefghij XYZ.,!\n", max_size=40)
RULES = RuleGuardrail(GuardrailSpec(name="r", type="rules", terms=("Nightingale", "code red")))


@given(before=_words, after=_words, term=st.sampled_from(["nightingale", "NIGHTINGALE", "code red", "Code Red"]))
def test_a_blocked_term_is_flagged_wherever_it_stands_as_a_word(before: str, after: str, term: str) -> None:
    text = f"{before} {term} {after}"
    (verdict,) = asyncio.run(RULES.moderate([text]))
    assert verdict.flagged
    assert verdict.found == ["blocked"]


@given(text=_words)
def test_text_without_a_blocked_term_passes(text: str) -> None:
    verdicts = asyncio.run(RULES.moderate([text, f"nightingales{text}"]))  # inside a longer word: no match
    assert [v.flagged for v in verdicts] == [False, False]


def test_a_term_inside_a_longer_word_is_not_a_match() -> None:
    verdicts = asyncio.run(RULES.moderate(["nightingales sing", "the nightingale sings"]))
    assert [v.flagged for v in verdicts] == [False, True]


@pytest.mark.parametrize(
    ("answer", "flagged", "found"),
    [
        ("safe", False, []),
        ("  Safe\n", False, []),
        ("unsafe\nS1", True, ["S1", "violence"]),
        ("unsafe\nS10, S11", True, ["S10", "S11", "hate", "self-harm"]),
        ("unsafe", True, []),
    ],
)
def test_the_classifier_reads_llama_guard_answers(answer: str, flagged: bool, found: list[str]) -> None:
    guard = ClassifierGuardrail(GuardrailSpec(name="g", type="classifier", model="m"), registry=None)  # type: ignore[arg-type]
    verdict = guard._parse(answer)
    assert verdict.flagged is flagged
    assert sorted(verdict.found) == sorted(found)


def test_a_classifier_answer_that_is_neither_safe_nor_unsafe_fails_rather_than_passes() -> None:
    guard = ClassifierGuardrail(GuardrailSpec(name="g", type="classifier", model="m"), registry=None)  # type: ignore[arg-type]
    with pytest.raises(ModelResponseError, match="neither 'safe' nor 'unsafe'"):
        guard._parse("I think this is fine")


def test_stages_decide_what_each_guardrail_checks() -> None:
    output_only = RuleGuardrail(GuardrailSpec(name="o", type="rules", terms=("secret",), stages=("output",)))
    checks = TurnChecks([output_only])
    assert checks.checks_output
    assert asyncio.run(checks.check_input(["the secret"])) is None
    blocked = asyncio.run(checks.check_output("the secret"))
    assert blocked is not None
    assert blocked.reason == "output blocked by guardrail 'o': blocked"
