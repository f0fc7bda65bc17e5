"""The pydantic model of `POST /v1/responses`' body: what `/openapi.json` documents, and the validator that words
the error for a body the fast decoder (`_schemas.decode_create`) does not take.

A request is decoded by msgspec into `_schemas.ResponseCreate` (a struct); only a body msgspec refuses, or one it
takes but a check after it refuses, is handed to FastAPI, which validates it with this model, so a bad body gets the
same 400 (naming the field) as it always did, and a body only pydantic's lax rules take (`"max_output_tokens":
"5"`) is still served. The two definitions are kept field for field alike by tests/test_server_bodies.py.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from . import _schemas
from ._schemas import CompactionSetting, ConversationRef, Metadata, _Body, check_metadata


class ResponseCreate(_Body):
    model: str | None = None
    input: str | list[Any] | None = None
    instructions: str | None = None
    conversation: str | ConversationRef | None = None
    previous_response_id: str | None = None
    store: bool = True
    stream: bool = False
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    max_tool_calls: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    metadata: Metadata | None = None
    truncation: Literal["auto", "disabled"] | None = None
    context_management: list[CompactionSetting] | None = None
    background: bool | None = None
    user: str | None = None
    include: list[str] | None = None
    guardrails: list[str | dict[str, Any]] | None = None
    """Llama Stack's: guardrail names (or `{"type": name}`) checked on top of the model's own."""

    @field_validator("metadata")
    @classmethod
    def _metadata_sizes(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return check_metadata(value)

    def decoded(self) -> _schemas.ResponseCreate:
        """The struct the handlers take, from what pydantic validated (no second validation: it is valid)."""
        fields = {name: getattr(self, name) for name in _schemas.ResponseCreate.__struct_fields__}
        conversation = self.conversation
        if isinstance(conversation, ConversationRef):
            fields["conversation"] = _schemas.ConversationRefStruct(id=conversation.id)
        if self.context_management is not None:
            fields["context_management"] = [
                _schemas.CompactionSettingStruct(**s.model_dump()) for s in self.context_management
            ]
        return _schemas.ResponseCreate(**fields)
