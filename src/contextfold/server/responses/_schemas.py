"""Request bodies at the HTTP edge: pydantic models (the OpenAPI document is generated from them), and for the hot
`POST /v1/responses` a msgspec struct, `ResponseCreate`, decoded from the body's bytes by `decode_create` (the one
place it is decoded; its documented pydantic twin, which words the errors, is `_documented.ResponseCreate`).

Fields follow the OpenAI Responses and Conversations APIs. Items (`input`, `items`) stay plain JSON here and are
checked by `_items.parse_input`, which names the exact path of a bad field. Unknown top-level fields are ignored,
as the official SDK may send newer ones; fields that change behaviour and are not supported (`background`) are
refused with a 400 that says so. Arrays and objects nested deeper than `MAX_JSON_DEPTH` are refused whole, on every
route: no real request comes near it, and a deeper one would reach Python's recursion limit later on (rendering the
response, storing or reloading the log).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..._errors import InvalidRequestError
from ...events import ToolSpec
from ._hosted import HOSTED_TYPES

Metadata = Annotated[dict[str, str], Field(max_length=16)]
_RESERVED_TOOLS = ("recall", "expand", "file_search")
_CHOICES: dict[str, Literal["auto", "none", "required"]] = {"auto": "auto", "none": "none", "required": "required"}


MAX_JSON_DEPTH = 64
"""Levels of arrays and objects a request body may nest (a tool's JSON schema rarely passes 10)."""


def too_deep(param: str | None = None) -> InvalidRequestError:
    return InvalidRequestError(
        f"the request body nests arrays or objects more than {MAX_JSON_DEPTH} levels deep; flatten it", param=param
    )


def check_depth(body: object) -> None:
    """Refuse a parsed JSON body nested over `MAX_JSON_DEPTH` levels, naming the top-level field that is. Walks
    without recursion, so the check itself cannot reach the recursion limit."""
    if not isinstance(body, dict):
        fields: list[tuple[str | None, object]] = [(None, body)]
    else:
        fields = [(str(key), value) for key, value in body.items()]
    for param, value in fields:
        stack: list[tuple[object, int]] = [(value, 1 if param is None else 2)]
        while stack:
            node, depth = stack.pop()
            children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
            if children is None:
                continue
            if depth > MAX_JSON_DEPTH:
                raise too_deep(param)
            stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _depth(cls, data: Any) -> Any:
        check_depth(data)  # raises our own error, which pydantic passes on as is: a 400 naming the field
        return data


class ConversationRef(_Body):
    id: str


class CompactionSetting(_Body):
    type: Literal["compaction"]
    compact_threshold: int | None = Field(default=None, ge=1)
    # contextfold's own, in the same entry; their limits are checked in `_compaction.request_policy`
    threshold: float | None = None
    target: float | None = None
    tail_turns: int | None = None
    head_items: int | None = None
    masking: bool | None = None
    summariser: str | None = None
    summariser_timeout: float | None = None
    summary_max_tokens: int | None = None


class ConversationRefStruct(msgspec.Struct):
    id: str


class CompactionSettingStruct(msgspec.Struct, kw_only=True):
    type: Literal["compaction"]
    compact_threshold: Annotated[int, Meta(ge=1)] | None = None
    threshold: float | None = None
    target: float | None = None
    tail_turns: int | None = None
    head_items: int | None = None
    masking: bool | None = None
    summariser: str | None = None
    summariser_timeout: float | None = None
    summary_max_tokens: int | None = None

    def model_dump(self) -> dict[str, Any]:
        """Its fields by name, as `_compaction.request_policy` reads an entry (pydantic's spelling)."""
        return msgspec.structs.asdict(self)


class ResponseCreate(msgspec.Struct, kw_only=True):
    """`POST /v1/responses`' body, as the handlers take it: the fields of `_documented.ResponseCreate` (the
    documented model), with the same types, defaults and bounds. Unknown fields are ignored."""

    model: str | None = None
    input: str | list[Any] | None = None
    instructions: str | None = None
    conversation: str | ConversationRefStruct | None = None
    previous_response_id: str | None = None
    store: bool = True
    stream: bool = False
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: Annotated[int, Meta(ge=1)] | None = None
    max_tool_calls: Annotated[int, Meta(ge=1)] | None = None
    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, Meta(gt=0, le=1)] | None = None
    metadata: Annotated[dict[str, str], Meta(max_length=16)] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    context_management: list[CompactionSettingStruct] | None = None
    background: bool | None = None
    user: str | None = None
    include: list[str] | None = None
    guardrails: list[str | dict[str, Any]] | None = None
    """Llama Stack's: guardrail names (or `{"type": name}`) checked on top of the model's own."""

    @property
    def conversation_id(self) -> str | None:
        return self.conversation.id if isinstance(self.conversation, ConversationRefStruct) else self.conversation


_CREATE = msgspec.json.Decoder(ResponseCreate)
_ANY = msgspec.json.Decoder()


def decode_create(body: bytes) -> ResponseCreate | None:
    """The body as a `ResponseCreate`, or None when it is not one as msgspec reads it (not JSON, a field of the
    wrong type, too deep, metadata too long): the caller then has FastAPI validate it with the documented model,
    which words the 400 naming the field (or, for what only pydantic's lax rules take, serves it).

    msgspec is stricter than pydantic (a `"5"` is not an int), never laxer, so what it takes pydantic takes too,
    as the same values (tests/test_server_bodies.py checks it over generated bodies)."""
    try:
        decoded = _CREATE.decode(body)
        check_metadata(decoded.metadata)
        # A body with at most MAX_JSON_DEPTH brackets cannot nest deeper (the count is C-speed); another is decoded
        # as plain JSON and walked, since a field msgspec skips (unknown ones) is under the bound too.
        if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH:
            check_depth(_ANY.decode(body))
    except (msgspec.DecodeError, ValueError, InvalidRequestError, RecursionError):
        return None
    return decoded


class ConversationCreate(_Body):
    items: list[Any] | None = None
    metadata: Metadata | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata_sizes(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return check_metadata(value)


class ConversationUpdate(_Body):
    metadata: Metadata

    @field_validator("metadata")
    @classmethod
    def _metadata_sizes(cls, value: dict[str, str]) -> dict[str, str]:
        return check_metadata(value) or {}


class ItemsCreate(_Body):
    items: Annotated[list[Any], Field(min_length=1)]


class CompactRequest(_Body):
    """`POST /v1/responses/compact`: compact a conversation, or a stateless input, into a compaction item."""

    model: str | None = None
    input: str | list[Any] | None = None
    instructions: str | None = None
    previous_response_id: str | None = None
    conversation: str | ConversationRef | None = None

    @property
    def conversation_id(self) -> str | None:
        return self.conversation.id if isinstance(self.conversation, ConversationRef) else self.conversation


class InputTokensRequest(_Body):
    model: str | None = None
    input: str | list[Any] | None = None
    instructions: str | None = None
    conversation: str | ConversationRef | None = None
    previous_response_id: str | None = None
    tools: list[dict[str, Any]] | None = None

    @property
    def conversation_id(self) -> str | None:
        return self.conversation.id if isinstance(self.conversation, ConversationRef) else self.conversation


class ConversationCompact(_Body):
    """The extension `POST /v1/conversations/{id}/compact`."""

    instructions: str | None = Field(default=None, max_length=20_000)
    model: str | None = None


class PinRequest(_Body):
    item_id: str


class ForkRequest(_Body):
    item_id: str | None = None
    """Fork after this item (default: the whole conversation)."""
    metadata: Metadata | None = None


def check_metadata(value: dict[str, str] | None) -> dict[str, str] | None:
    if value is None:
        return None
    for key, text in value.items():
        if len(key) > 64:
            raise ValueError(f"metadata key {key[:20]!r}... is over 64 characters")
        if len(text) > 512:
            raise ValueError(f"metadata value of {key!r} is over 512 characters")
    return value


def function_tools(tools: list[dict[str, Any]] | None) -> list[ToolSpec] | None:
    """The request's function tools as specs; hosted types are left to `_hosted`, others refused with the reason."""
    if tools is None:
        return None
    specs: list[ToolSpec] = []
    for n, tool in enumerate(tools):
        kind = tool.get("type")
        if isinstance(kind, str) and kind in HOSTED_TYPES:  # any JSON value may stand here (a dict: unhashable)
            continue
        if kind != "function":
            raise InvalidRequestError(
                f"tool type {kind!r} is not supported here; use function tools (the built-in recall and expand are "
                "offered automatically once history is folded)",
                param=f"tools[{n}].type",
            )
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequestError("a function tool needs a name", param=f"tools[{n}].name")
        if name in _RESERVED_TOOLS or name.startswith("mcp__"):
            raise InvalidRequestError(
                f"tool name {name!r} is reserved for contextfold's built-in tool; rename yours",
                param=f"tools[{n}].name",
            )
        parameters = tool.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InvalidRequestError("parameters must be a JSON schema object", param=f"tools[{n}].parameters")
        description = tool.get("description") or ""
        if not isinstance(description, str):
            raise InvalidRequestError("description must be a string", param=f"tools[{n}].description")
        specs.append(ToolSpec(name=name, description=description, parameters=parameters))
    if len({s.name for s in specs}) != len(specs):
        raise InvalidRequestError("two tools have the same name; tool names must be unique", param="tools")
    return specs


def tool_choice(
    value: str | dict[str, Any] | None, specs: list[ToolSpec] | None
) -> Literal["auto", "none", "required"] | None:
    """The request's tool_choice as the model seam takes it. A named function is honoured when it is the only
    tool (then it is `required`); naming one of several is refused rather than silently widened."""
    if value is None:
        return None
    if isinstance(value, str) and value in _CHOICES:
        return _CHOICES[value]
    if isinstance(value, dict) and value.get("type") == "function":
        name = value.get("name")
        names = [s.name for s in specs or []]
        if names == [name]:
            return "required"
        raise InvalidRequestError(
            f"tool_choice naming function {name!r} is supported only when it is the only tool (tools: {names}); "
            "send just that tool, or use 'required'",
            param="tool_choice",
        )
    raise InvalidRequestError("tool_choice must be 'auto', 'none', 'required' or a function", param="tool_choice")
