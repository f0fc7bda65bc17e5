"""Guardrails: one seam, three backends, used by responses (input and output checks) and `POST /v1/moderations`.

    class Guardrail(Protocol):
        spec: GuardrailSpec
        async def moderate(self, texts: Sequence[str]) -> list[Verdict]     # one verdict per text

- `RuleGuardrail`: blocked terms (whole words, any case) and regular expressions; needs no model.
- `ModerationGuardrail`: any OpenAI-compatible `/v1/moderations` upstream, its verdicts taken as they are.
- `ClassifierGuardrail`: a served chat model prompted as a safety classifier, the Llama Guard pattern: it answers
  `safe`, or `unsafe` and a line of violated categories (`S1,S10`), mapped onto OpenAI's category names too.

A backend that fails (an upstream down, a classifier answering something else) fails the turn with a model error,
never lets the text through unchecked.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx2

from ..._errors import ConfigurationError, InvalidRequestError, ModelResponseError, ModelUnavailableError
from ...events import user
from ...models import ModelSettings
from ...models._base import error_for_status
from ...runtime import Blocked
from ...view import Window
from .._registry import ModelRegistry
from ._guardrails_config import GuardrailSpec, Stage

OPENAI_CATEGORIES = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent", "self-harm",
    "self-harm/instructions", "self-harm/intent", "sexual", "sexual/minors", "violence", "violence/graphic",
)  # fmt: skip
"""The categories every OpenAI moderation result carries (the SDK's `Categories` fields)."""

HAZARDS = {
    "S1": ("Violent Crimes", ("violence",)),
    "S2": ("Non-Violent Crimes", ("illicit",)),
    "S3": ("Sex-Related Crimes", ("sexual",)),
    "S4": ("Child Sexual Exploitation", ("sexual/minors",)),
    "S5": ("Defamation", ("harassment",)),
    "S6": ("Specialized Advice", ()),
    "S7": ("Privacy", ()),
    "S8": ("Intellectual Property", ()),
    "S9": ("Indiscriminate Weapons", ("illicit/violent", "violence")),
    "S10": ("Hate", ("hate",)),
    "S11": ("Suicide & Self-Harm", ("self-harm",)),
    "S12": ("Sexual Content", ("sexual",)),
    "S13": ("Elections", ()),
    "S14": ("Code Interpreter Abuse", ("illicit",)),
}
"""Llama Guard 3's hazard taxonomy (MLCommons), and the OpenAI categories each one flags."""

_CLASSIFIER_PROMPT = """Task: Check if there is unsafe content in '{role}' messages in conversations according to our \
safety policy with the below categories.

<BEGIN UNSAFE CONTENT CATEGORIES>
{categories}
<END UNSAFE CONTENT CATEGORIES>

<BEGIN CONVERSATION>

{role}: {text}

<END CONVERSATION>

Provide your safety assessment for ONLY THE LAST {role} message in the above conversation:
 - First line must read 'safe' or 'unsafe'.
 - If unsafe, a second line must include a comma-separated list of violated categories."""


@dataclass(frozen=True, slots=True)
class Verdict:
    flagged: bool
    categories: dict[str, bool] = field(default_factory=dict)
    """The categories found (True) or checked and clear (False), by the backend's names (and OpenAI's)."""
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def found(self) -> list[str]:
        return [name for name, hit in self.categories.items() if hit]


class Guardrail(Protocol):
    spec: GuardrailSpec

    async def moderate(self, texts: Sequence[str], *, role: str = "User") -> list[Verdict]: ...


class RuleGuardrail:
    def __init__(self, spec: GuardrailSpec) -> None:
        self.spec = spec
        terms = [r"(?<!\w)" + re.escape(term) + r"(?!\w)" for term in spec.terms]
        self._terms = re.compile("|".join(terms), re.IGNORECASE) if terms else None
        self._patterns = [re.compile(p) for p in spec.patterns]

    async def moderate(self, texts: Sequence[str], *, role: str = "User") -> list[Verdict]:
        return [self._one(text) for text in texts]

    def _one(self, text: str) -> Verdict:
        hit = bool(self._terms and self._terms.search(text)) or any(p.search(text) for p in self._patterns)
        return Verdict(hit, {self.spec.category: hit}, {self.spec.category: 1.0 if hit else 0.0})


class ModerationGuardrail:
    def __init__(self, spec: GuardrailSpec) -> None:
        self.spec = spec

    async def moderate(self, texts: Sequence[str], *, role: str = "User") -> list[Verdict]:
        assert self.spec.base_url is not None  # the config requires it
        key = self.spec.api_key or (os.environ.get(self.spec.api_key_env) if self.spec.api_key_env else None)
        if self.spec.api_key_env and not key:
            raise ConfigurationError(
                f"guardrail {self.spec.name!r} reads its key from ${self.spec.api_key_env}, which is not set"
            )
        body: dict[str, Any] = {"input": list(texts)}
        if self.spec.model:
            body["model"] = self.spec.model
        headers = {"authorization": f"Bearer {key}"} if key else {}
        url = self.spec.base_url.rstrip("/") + "/moderations"
        try:
            async with httpx2.AsyncClient(timeout=30.0) as client:
                reply = await client.post(url, json=body, headers=headers)
        except httpx2.HTTPError as error:
            raise ModelUnavailableError(f"guardrail {self.spec.name!r} could not reach {url}: {error}") from error
        if reply.status_code != 200:
            raise error_for_status(f"guardrail {self.spec.name!r}", reply.status_code, reply.text[:500], reply.headers)
        try:
            results = reply.json()["results"]
            verdicts = [
                Verdict(
                    bool(r["flagged"]),
                    {str(k): bool(v) for k, v in (r.get("categories") or {}).items() if v is not None},
                    {str(k): float(v) for k, v in (r.get("category_scores") or {}).items() if v is not None},
                )
                for r in results
            ]
        except (ValueError, KeyError, TypeError) as error:
            raise ModelResponseError(f"guardrail {self.spec.name!r}: {url} answered no moderation results") from error
        if len(verdicts) != len(texts):
            raise ModelResponseError(
                f"guardrail {self.spec.name!r}: {url} answered {len(verdicts)} results for {len(texts)} inputs"
            )
        return verdicts


class ClassifierGuardrail:
    def __init__(self, spec: GuardrailSpec, registry: ModelRegistry) -> None:
        self.spec = spec
        self.registry = registry

    async def moderate(self, texts: Sequence[str], *, role: str = "User") -> list[Verdict]:
        assert self.spec.model is not None  # the config requires it
        resolved = await self.registry.resolve(self.spec.model)
        categories = "\n".join(f"{code}: {name}." for code, (name, _) in HAZARDS.items())
        verdicts = []
        for text in texts:
            prompt = _CLASSIFIER_PROMPT.format(role=role, categories=categories, text=text)
            window = Window(system_prompt=None, tools=None, max_output_tokens=None, items=[user(prompt)])
            answer = await resolved.model.request(window, ModelSettings(max_output_tokens=32, temperature=0.0))
            verdicts.append(self._parse(answer.text))
        return verdicts

    def _parse(self, answer: str) -> Verdict:
        lines = [line.strip() for line in answer.strip().splitlines() if line.strip()]
        first = lines[0].lower() if lines else ""
        if first == "safe":
            return Verdict(False, dict.fromkeys(HAZARDS, False))
        if first != "unsafe":
            raise ModelResponseError(
                f"guardrail {self.spec.name!r}: classifier {self.spec.model!r} answered {answer[:200]!r}, neither "
                "'safe' nor 'unsafe'; use a safety classifier model (Llama Guard) there"
            )
        codes = [c.strip().upper() for c in (lines[1] if len(lines) > 1 else "").split(",") if c.strip()]
        categories = dict.fromkeys(HAZARDS, False) | dict.fromkeys(codes, True)
        for code in codes:
            for name in HAZARDS.get(code, ("", ()))[1]:
                categories[name] = True
        return Verdict(True, categories, dict.fromkeys(codes, 1.0))


def build(spec: GuardrailSpec, registry: ModelRegistry) -> Guardrail:
    if spec.type == "rules":
        return RuleGuardrail(spec)
    if spec.type == "moderation":
        return ModerationGuardrail(spec)
    return ClassifierGuardrail(spec, registry)


class Guardrails:
    """The server's configured guardrails, by name."""

    def __init__(self, specs: Sequence[GuardrailSpec], registry: ModelRegistry) -> None:
        self.by_name: dict[str, Guardrail] = {spec.name: build(spec, registry) for spec in specs}

    def named(self, names: Sequence[str], *, param: str) -> list[Guardrail]:
        unknown = [n for n in names if n not in self.by_name]
        if unknown:
            known = ", ".join(sorted(self.by_name)) or "none (add [[guardrails]] tables to the config file)"
            raise InvalidRequestError(f"unknown guardrail {unknown[0]!r}; this server has: {known}", param=param)
        return [self.by_name[n] for n in dict.fromkeys(names)]

    def for_turn(self, names: Sequence[str]) -> TurnChecks | None:
        """The checks of a turn that uses `names` (already validated); None when there are none."""
        chosen = self.named(names, param="guardrails")
        return TurnChecks(chosen) if chosen else None


class TurnChecks:
    """A turn's guardrails as the runtime's `TurnGuard`: the first guardrail that flags a text blocks the turn."""

    def __init__(self, guardrails: Sequence[Guardrail]) -> None:
        self.guardrails = list(guardrails)
        self.checks_output = any("output" in g.spec.stages for g in guardrails)

    async def check_input(self, texts: Sequence[str]) -> Blocked | None:
        return await self._check("input", texts, "User")

    async def check_output(self, text: str) -> Blocked | None:
        return await self._check("output", [text], "Agent")

    async def _check(self, stage: Stage, texts: Sequence[str], role: str) -> Blocked | None:
        if not texts:
            return None
        for guardrail in self.guardrails:
            if stage not in guardrail.spec.stages:
                continue
            for verdict in await guardrail.moderate(texts, role=role):
                if verdict.flagged:
                    found = ", ".join(verdict.found) or "flagged"
                    reason = f"{stage} blocked by guardrail {guardrail.spec.name!r}: {found}"
                    return Blocked(guardrail.spec.message, reason)
        return None


def requested(given: Sequence[object] | None) -> list[str]:
    """The guardrail names of a request's `guardrails`, as Llama Stack accepts them: names or `{"type": name}`."""
    names = []
    for n, entry in enumerate(given or ()):
        if isinstance(entry, dict) and isinstance(entry.get("type"), str):
            entry = entry["type"]
        if not isinstance(entry, str) or not entry:
            raise InvalidRequestError(
                f"guardrails[{n}] must be a guardrail name or {{'type': name}}, got {entry!r}", param=f"guardrails[{n}]"
            )
        names.append(entry)
    return names
