"""`POST /v1/moderations`, in OpenAI's shape, answered by the server's guardrails (any of the three backends).

`model` names a configured guardrail (default: the first `[[guardrails]]` table). Every result carries all of
OpenAI's categories (the SDK's `Moderation` has a field for each), plus the backend's own where it has more
(Llama Guard's `S1`..`S14`, a rule list's category).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from ..._errors import InvalidRequestError
from ...events import new_id
from .._state import ServerState, state_of, tenant_of
from ._guardrails import OPENAI_CATEGORIES, Verdict
from ._schemas import _Body

router = APIRouter(prefix="/v1", tags=["moderations"])
Tenant = Annotated[str, Depends(tenant_of)]
State = Annotated[ServerState, Depends(state_of)]
_MAX_INPUTS = 32


class ModerationCreate(_Body):
    input: str | list[str] | list[dict[str, Any]]
    model: str | None = None


@router.post("/moderations")
async def create_moderation(body: ModerationCreate, tenant: Tenant, state: State) -> dict[str, Any]:
    texts = _texts(body.input)
    guardrails = state.guardrails.by_name
    if body.model is None and not guardrails:
        raise InvalidRequestError(
            "this server has no guardrails to moderate with; add a [[guardrails]] table to its config file",
            param="model",
        )
    # An empty model names no guardrail (a 400 from `named`), it does not mean the default.
    name = next(iter(guardrails)) if body.model is None else body.model
    (guardrail,) = state.guardrails.named([name], param="model")
    verdicts = await guardrail.moderate(texts)
    return {"id": new_id("modr"), "model": name, "results": [_result(v) for v in verdicts]}


def _texts(given: str | list[str] | list[dict[str, Any]]) -> list[str]:
    items: list[Any] = [given] if isinstance(given, str) else list(given)
    if not items:
        raise InvalidRequestError("input is empty: send a string, a list of strings or of text parts", param="input")
    if len(items) > _MAX_INPUTS:
        raise InvalidRequestError(f"input has {len(items)} entries; send at most {_MAX_INPUTS}", param="input")
    texts = []
    for n, item in enumerate(items):
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, dict) and item.get("type") == "text" and isinstance(item.get("text"), str):
            texts.append(item["text"])
        else:
            raise InvalidRequestError(
                f"input[{n}] is not text; this server moderates text only ({{'type': 'text', 'text': ...}})",
                param=f"input[{n}]",
            )
    return texts


def _result(verdict: Verdict) -> dict[str, Any]:
    categories = dict.fromkeys(OPENAI_CATEGORIES, False) | verdict.categories
    scores = dict.fromkeys(OPENAI_CATEGORIES, 0.0) | verdict.scores
    return {
        "flagged": verdict.flagged,
        "categories": categories,
        "category_scores": scores,
        "category_applied_input_types": {name: ["text"] for name in categories},
    }
