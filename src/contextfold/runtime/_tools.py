"""Tools from Python functions: the JSON schema from the signature and docstring, arguments checked against it.

    @tool
    def read_file(path: str, limit: int = 200) -> str:
        '''Read a text file.

        Args:
            path: The file's path, relative to the workspace.
            limit: At most this many lines.
        '''

A tool may be sync (run in a worker thread, so it never blocks the event loop) or async. It returns a string, a
`ToolOutput` (the full output and a compact summary that observation masking shows once the output is old), or any
JSON-encodable value. An exception, a timeout or arguments that do not match the schema become an error result the
model reads and can act on; they never crash the turn.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, overload

import docstring_parser
import msgspec

from .._errors import InvalidRequestError
from ..events import ToolSpec
from ..models import ToolCallRequest
from ._events import ToolOutcome


@dataclass(frozen=True, slots=True)
class ToolOutput:
    """A tool's full output, and optionally the compact summary shown in its place once it is masked."""

    output: str
    summary: str | None = None


class Tool:
    """A function the model may call. `server_side` marks the tools the runtime answers itself (recall, expand,
    file_search, MCP tools), `tool_type` says which kind of tool it is ("function" for a client's function; the
    turn's tool_execution steps carry both)."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = None,
        server_side: bool = False,
        tool_type: str | None = None,
    ) -> None:
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", ""))
        if not _NAME.fullmatch(self.name):
            raise InvalidRequestError(
                f"tool name {self.name!r} is not valid: use 1-64 letters, digits, '_' or '-' (pass name=... for a "
                "lambda or a callable object)"
            )
        summary, params = _docstring(inspect.getdoc(fn) or "")
        self.description = description if description is not None else summary
        self.timeout = timeout
        self.server_side = server_side
        self.tool_type = tool_type or (self.name if server_side else "function")
        self._arguments, parameters = _described(fn, self.name, params)
        self.parameters = copy.deepcopy(parameters)  # the cached schema is shared: each tool gets its own copy

    @property
    def spec(self) -> ToolSpec:
        return ToolSpec(name=self.name, description=self.description, parameters=self.parameters)

    async def run(self, call: ToolCallRequest, *, time_limit: float) -> ToolOutcome:
        """Call the tool with the model's arguments (its own timeout, if it has one, wins over `time_limit`);
        every failure becomes an error outcome."""
        try:
            parsed = msgspec.json.decode(call.arguments or "{}", type=self._arguments)
        except msgspec.ValidationError as exc:
            return self._error(call, f"invalid arguments for {self.name}: {exc}; follow the tool's JSON schema")
        except msgspec.DecodeError as exc:
            return self._error(call, f"the arguments for {self.name} are not valid JSON: {exc}")
        kwargs = {name: getattr(parsed, name) for name in parsed.__struct_fields__}
        limit = self.timeout or time_limit
        try:
            if inspect.iscoroutinefunction(self.fn):
                value = await asyncio.wait_for(self.fn(**kwargs), limit)
            else:
                value = await asyncio.wait_for(asyncio.to_thread(self.fn, **kwargs), limit)
        except TimeoutError:
            return self._error(call, f"{self.name} timed out after {limit:g}s")
        except Exception as exc:  # the model sees the failure and can try something else
            return self._error(call, f"{self.name} failed: {type(exc).__name__}: {exc}")
        if isinstance(value, ToolOutput):
            return ToolOutcome(call.call_id, self.name, value.output, summary=value.summary)
        return ToolOutcome(call.call_id, self.name, _as_text(value))

    def _error(self, call: ToolCallRequest, message: str) -> ToolOutcome:
        return ToolOutcome(call.call_id, self.name, message, is_error=True)


ToolLike = Tool | Callable[..., Any]

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ARGUMENTS = "contextfold_tool_arguments"


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...
@overload
def tool(
    *, name: str | None = None, description: str | None = None, timeout: float | None = None
) -> Callable[[Callable[..., Any]], Tool]: ...
def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a `Tool` of a function, as `@tool` or `@tool(name=..., timeout=...)`."""
    if fn is not None:
        return Tool(fn)
    return lambda f: Tool(f, name=name, description=description, timeout=timeout)


def as_tool(item: ToolLike) -> Tool:
    return item if isinstance(item, Tool) else Tool(item)


@functools.lru_cache(maxsize=256)
def _docstring(text: str) -> tuple[str, tuple[tuple[str, str | None], ...]]:
    doc = docstring_parser.parse(text)
    summary = "\n\n".join(part for part in (doc.short_description, doc.long_description) if part)
    return summary, tuple((p.arg_name, p.description) for p in doc.params)


def _described(
    fn: Callable[..., Any], name: str, params: tuple[tuple[str, str | None], ...]
) -> tuple[type[msgspec.Struct], dict[str, Any]]:
    """`_arguments_type`, once per function definition: the built-in tools are closures made afresh for every turn
    (each over its own conversation), and building a struct type and its schema cost ~0.4 ms a tool."""
    if isinstance(fn, types.FunctionType):
        try:
            key = (fn.__code__, fn.__defaults__, _frozen(fn.__kwdefaults__), _frozen(fn.__annotations__), name, params)
            return _arguments_cached(key, fn)
        except TypeError:  # a default or an annotation that cannot be hashed: built each time
            pass
    return _arguments_type(fn, name, dict(params))


def _frozen(mapping: dict[str, Any] | None) -> tuple[tuple[str, Any], ...] | None:
    return None if mapping is None else tuple(sorted(mapping.items()))


_ARGUMENT_TYPES: dict[Any, tuple[type[msgspec.Struct], dict[str, Any]]] = {}


def _arguments_cached(key: Any, fn: Callable[..., Any]) -> tuple[type[msgspec.Struct], dict[str, Any]]:
    found = _ARGUMENT_TYPES.get(key)
    if found is None:
        found = _ARGUMENT_TYPES[key] = _arguments_type(fn, key[4], dict(key[5]))
        if len(_ARGUMENT_TYPES) > 1_024:  # functions defined at run time, endlessly: keep it bounded
            _ARGUMENT_TYPES.pop(next(iter(_ARGUMENT_TYPES)))
    return found


def _arguments_type(
    fn: Callable[..., Any], name: str, descriptions: dict[str, str | None]
) -> tuple[type[msgspec.Struct], dict[str, Any]]:
    """A struct type of the function's parameters (to check arguments) and its JSON schema (for the model)."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:
        raise InvalidRequestError(f"tool {name!r}: cannot resolve its type annotations: {exc}") from exc
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for parameter in inspect.signature(fn).parameters.values():
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise InvalidRequestError(
                f"tool {name!r}: *args and **kwargs cannot be described to a model; name each parameter"
            )
        kind = hints.get(parameter.name, Any)
        if parameter.default is inspect.Parameter.empty:
            fields.append((parameter.name, kind))
        else:
            fields.append((parameter.name, kind, parameter.default))
    struct = msgspec.defstruct(_ARGUMENTS, fields, forbid_unknown_fields=True)
    try:
        schema = msgspec.json.schema(struct)
    except TypeError as exc:
        raise InvalidRequestError(f"tool {name!r}: a parameter type has no JSON schema: {exc}") from exc
    definitions: dict[str, Any] = schema.pop("$defs", {})
    parameters: dict[str, Any] = dict(definitions.pop(_ARGUMENTS))
    parameters.pop("title", None)
    for field_name, text in descriptions.items():
        if text and field_name in parameters.get("properties", {}):
            parameters["properties"][field_name] = {**parameters["properties"][field_name], "description": text}
    if definitions:
        parameters["$defs"] = definitions
    return struct, parameters


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    try:
        return msgspec.json.encode(value).decode()
    except TypeError:
        return str(value)
