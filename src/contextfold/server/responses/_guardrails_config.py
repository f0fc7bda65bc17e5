"""`[[guardrails]]` tables of the config file: each names one check a model or a request can use.

    [[guardrails]]
    name = "policy"
    type = "rules"                  # built in, no model: blocked terms (whole words, any case) and regexes
    terms = ["project nightingale"]
    patterns = ['(?i)\\bpassword\\s*[:=]']
    [[guardrails]]
    name = "moderation"
    type = "moderation"             # any OpenAI-compatible /v1/moderations upstream
    base_url = "https://api.openai.com/v1"
    model = "omni-moderation-latest"
    api_key_env = "OPENAI_API_KEY"
    [[guardrails]]
    name = "guard"
    type = "classifier"             # a served chat model prompted as a safety classifier (the Llama Guard pattern)
    model = "llama-guard"           # the name of a [[models]] route
    stages = ["input"]              # default: input and output
    message = "I can't help with that."

A model turns them on with `guardrails = ["policy", "guard"]` in its `[[models]]` table.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from ..._errors import ConfigurationError

Kind = Literal["rules", "moderation", "classifier"]
KINDS: tuple[str, ...] = get_args(Kind)
Stage = Literal["input", "output"]
STAGES: tuple[str, ...] = get_args(Stage)
DEFAULT_REFUSAL = "I'm sorry, but I can't help with that."
_KEYS = ("name", "type", "stages", "message", "terms", "patterns", "category", "base_url", "model", "api_key",
         "api_key_env")  # fmt: skip
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


@dataclass(frozen=True, slots=True)
class GuardrailSpec:
    name: str
    type: Kind
    stages: tuple[Stage, ...] = ("input", "output")
    message: str = DEFAULT_REFUSAL
    """The answer a blocked turn gets."""
    terms: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    category: str = "blocked"
    """rules: the category a match is reported under."""
    base_url: str | None = None
    model: str | None = None
    """moderation: the upstream's model (optional); classifier: the served model that classifies (required)."""
    api_key: str | None = field(default=None, repr=False)
    api_key_env: str | None = None


def parse_guardrails(tables: object, file: str) -> tuple[GuardrailSpec, ...]:
    if not isinstance(tables, list) or not all(isinstance(t, Mapping) for t in tables):
        raise ConfigurationError(f"{file}:guardrails must be [[guardrails]] tables, one per guardrail, got {tables!r}")
    specs: list[GuardrailSpec] = []
    for index, table in enumerate(tables):
        spec = _spec(table, f"{file}:guardrails[{index}]")
        if spec.name in (s.name for s in specs):
            raise ConfigurationError(f"{file}:guardrails[{index}].name {spec.name!r} is taken; pick another name")
        specs.append(spec)
    return tuple(specs)


def _spec(table: Mapping[str, Any], where: str) -> GuardrailSpec:
    unknown = sorted(set(table) - set(_KEYS))
    if unknown:
        raise ConfigurationError(f"unknown key(s) {', '.join(unknown)} in {where}; known: {', '.join(_KEYS)}")
    name, kind = table.get("name"), table.get("type")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigurationError(f"{where}.name must be 1-64 letters, digits, '_', '.', ':' or '-', got {name!r}")
    if kind not in KINDS:
        raise ConfigurationError(f"{where}.type must be one of {', '.join(KINDS)}, got {kind!r}")
    values: dict[str, Any] = {}
    for key in ("message", "category", "base_url", "model", "api_key", "api_key_env"):
        if key in table:
            if not isinstance(table[key], str) or not table[key]:
                raise ConfigurationError(f"{where}.{key} must be a non-empty string, got {table[key]!r}")
            values[key] = table[key]
    for key in ("stages", "terms", "patterns"):
        if key in table:
            items = table[key]
            if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
                raise ConfigurationError(f"{where}.{key} must be a list of non-empty strings, got {items!r}")
            values[key] = tuple(items)
    for stage in values.get("stages", ()):
        if stage not in STAGES:
            raise ConfigurationError(f"{where}.stages: {stage!r} is not a stage; use 'input' and/or 'output'")
    for pattern in values.get("patterns", ()):
        try:
            re.compile(pattern)
        except re.error as error:
            raise ConfigurationError(f"{where}.patterns: {pattern!r} is not a regular expression: {error}") from None
    label = f"{where} ({name!r}, type {kind})"
    if kind == "rules" and not (values.get("terms") or values.get("patterns")):
        raise ConfigurationError(f"{label} needs terms or patterns to match")
    if kind == "moderation" and "base_url" not in values:
        raise ConfigurationError(f'{label} needs base_url, the upstream\'s API root (e.g. "https://api.openai.com/v1")')
    if kind == "classifier" and "model" not in values:
        raise ConfigurationError(f"{label} needs model: the name of the served model that classifies")
    if kind != "moderation" and ({"base_url", "api_key", "api_key_env"} & set(values)):
        raise ConfigurationError(f"{label} takes no base_url or key: only a moderation upstream is called directly")
    return GuardrailSpec(name=name, type=kind, **values)


def check_references(specs: tuple[GuardrailSpec, ...], used: Mapping[str, tuple[str, ...]]) -> None:
    """Every guardrail a model names is configured."""
    known = {s.name for s in specs}
    for model, names in used.items():
        for name in names:
            if name not in known:
                raise ConfigurationError(
                    f"model {model!r} uses guardrail {name!r}, which no [[guardrails]] table names; known: "
                    + (", ".join(sorted(known)) or "none")
                )
