"""OpenAI input items (a Responses `input`, a Conversations `items` list) parsed into contextfold events.

Clients send JSON that the SDK's TypedDicts describe but nothing has validated, so every field is checked by hand:
a mistake becomes an `InvalidRequestError` whose `param` is the exact path (`input[3].content[0].type`) and whose
message says what was found and what is accepted. No KeyError, TypeError or pydantic error ever escapes.

Mapping (what our events cannot hold is refused, never dropped silently, unless it is presentation only):
- a string -> one user `Message` with one `TextPart`;
- `message` (typed, or the easy `{role, content}` form) -> `Message`; `input_text`, `output_text`, `text` and
  `refusal` parts -> `TextPart`; `input_image` with `image_url` -> `ImagePart` (`detail` `original` is kept as
  `high`, the closest we store); `input_image` with only `file_id` -> `FilePart(media_type="image/*", file_id=...)`,
  which the Responses renderer sends back as an `input_image` by file id; `input_file` -> `FilePart` (the media type
  from a `data:` URL, else guessed from the filename, else `application/octet-stream`);
- a run of consecutive `function_call` / contextfold `mcp_call` items -> `ToolCall`s sharing one new batch id (the
  model's parallel calls); a contextfold `mcp_call` carries its result, whose `ToolResult` follows the run's calls
  so the batch stays one group of calls followed by results;
- `function_call_output` -> `ToolResult` (a list of text parts is joined with newlines; the Responses wire has no
  error flag, so `is_error` is false);
- `reasoning` -> `Reasoning(provider="openai")` whose `data` keeps what was given (id, summary, encrypted_content,
  content) so it can be passed back upstream, and whose `text` is the summary texts joined;
- `compaction` -> `CompactionInput`, `item_reference` (or an object with only an `id`) -> `ItemReference`.
Event ids, turn ids and sequence numbers are left for the server to stamp.
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from .._errors import InvalidRequestError, PayloadTooLargeError
from ..events import Event, FilePart, ImagePart, Message, Part, Reasoning, Role, TextPart, ToolCall, ToolResult, new_id

BUILTIN_SERVER_LABEL = "contextfold"
"""The `server_label` of the `mcp_call` items that stand for our built-in tools (recall, expand)."""

_ROLES: dict[str, Role] = {"user": "user", "system": "system", "developer": "developer", "assistant": "assistant"}
_TEXT_PARTS = ("input_text", "output_text", "text")
_PART_TYPES = "input_text, output_text, text, refusal, input_image or input_file"
_ITEM_TYPES = (
    "message, function_call, function_call_output, reasoning, compaction, item_reference "
    f"or mcp_call (server_label {BUILTIN_SERVER_LABEL!r})"
)
_DETAILS: dict[str, Literal["auto", "low", "high"]] = {"auto": "auto", "low": "low", "high": "high", "original": "high"}
_IMAGE_URL_SCHEMES = ("http://", "https://", "data:")


@dataclass(frozen=True, slots=True)
class CompactionInput:
    """A `compaction` item given back as input: its summary text, and its id if it has one."""

    id: str | None
    summary: str


@dataclass(frozen=True, slots=True)
class ItemReference:
    """An `item_reference`: an item already stored, named by its id."""

    id: str


InputEntry = Event | CompactionInput | ItemReference
Item = dict[str, object]


def parse_input(
    value: object, *, param: str = "input", max_items: int = 1_000, answered: bool = False
) -> list[InputEntry]:
    """The entries of a client's `input` (Responses) or `items` (Conversations), in order.

    Raises `InvalidRequestError` (its `param` the path of the bad field) for anything malformed or unsupported,
    for a call id used twice, and for a `function_call` followed by anything but outputs before its own output.
    Calls at the end of the list may wait for outputs a later request sends (Conversations items are stored as
    they come), except with `answered` (a Responses `input`: as OpenAI, the model is not asked to go on past a
    call with no output). `PayloadTooLargeError` for more than `max_items` items.
    """
    if isinstance(value, str):
        if not value:
            raise InvalidRequestError(f"{param} is an empty string; send the user's text or a list of items", param)
        return [Message(role="user", content=[TextPart(value)])]
    if not isinstance(value, list):
        raise InvalidRequestError(f"{param} must be a string or a list of items, not {_kind(value)}", param)
    if len(value) > max_items:
        raise PayloadTooLargeError(
            f"{param} has {len(value)} items; at most {max_items} are accepted in one request, "
            "so send them over several requests",
            param,
        )
    parser = _Parser()
    for index, raw in enumerate(value):
        parser.add(raw, f"{param}[{index}]")
    return parser.finish(answered)


class _Parser:
    """Collects entries; keeps the open run of calls (one batch) and the built-in results that close it."""

    def __init__(self) -> None:
        self.out: list[InputEntry] = []
        self.batch: str | None = None
        self.run_results: list[ToolResult] = []
        self.calls: dict[str, str] = {}  # call id -> the path of its call
        self.waiting: dict[str, str] = {}  # the same, for function calls with no output yet

    def add(self, raw: object, path: str) -> None:
        item = _object(raw, path)
        kind = item.get("type")
        if kind is None:  # the easy message form has no type; nor need an item reference
            if "role" in item:
                kind = "message"
            elif "id" in item:
                kind = "item_reference"
            else:
                raise InvalidRequestError(f"{path}.type is missing; expected one of {_ITEM_TYPES}", f"{path}.type")
        if not isinstance(kind, str):
            raise InvalidRequestError(f"{path}.type must be a string, not {_kind(kind)}", f"{path}.type")
        if kind == "function_call":
            call = self._unique(_function_call(item, path, self._batch()), f"{path}.call_id")
            self.out.append(call)
            self.waiting[call.call_id] = path
            return
        if kind == "mcp_call":
            call, result = _mcp_call(item, path, self._batch())
            self.out.append(self._unique(call, f"{path}.id"))
            self.run_results.append(result)
            return
        self._end_run()
        parse = _PARSERS.get(kind)
        if parse is None:
            raise InvalidRequestError(
                f"{path}.type {kind!r} is not supported; expected one of {_ITEM_TYPES}", f"{path}.type"
            )
        entry = parse(item, path)
        if isinstance(entry, ToolResult):
            self.waiting.pop(entry.call_id, None)
        elif self.waiting:  # something other than the outputs comes after an unanswered call
            self._unanswered()
        self.out.append(entry)

    def finish(self, answered: bool) -> list[InputEntry]:
        self._end_run()
        if self.waiting and answered:
            self._unanswered()
        return self.out

    def _unique(self, call: ToolCall, where: str) -> ToolCall:
        """Outputs name their call by id: a second call with the id would leave one of the two unanswered."""
        first = self.calls.get(call.call_id)
        if first is not None:
            raise InvalidRequestError(
                f"{where} {call.call_id!r} is also the id of the call {first}; give every call its own id", where
            )
        self.calls[call.call_id] = where.rpartition(".")[0]
        return call

    def _unanswered(self) -> None:
        call_id, path = next(iter(self.waiting.items()))
        raise InvalidRequestError(
            f"no tool output found for function call {call_id!r} ({path}); send a function_call_output item "
            f"with call_id {call_id!r} right after the call (and its batch)",
            path,
        )

    def _batch(self) -> str:
        if self.batch is None:
            self.batch = new_id("batch")
        return self.batch

    def _end_run(self) -> None:
        self.out.extend(self.run_results)
        self.run_results = []
        self.batch = None


# --- field access ---------------------------------------------------------------------------------------------


def _kind(value: object) -> str:
    """The JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _shown(value: object) -> str:
    """A found value for a message: `missing`, a quoted string, or the JSON type."""
    if value is None:
        return "missing"
    return repr(value) if isinstance(value, str) else _kind(value)


def _wrong(where: str, expected: str, value: object) -> InvalidRequestError:
    """The error for a field that is missing (null counts as missing) or not of the `expected` kind."""
    if value is None:
        return InvalidRequestError(f"{where} is missing; it must be {expected}", where)
    return InvalidRequestError(f"{where} must be {expected}, not {_kind(value)}", where)


def _object(value: object, path: str) -> Item:
    if not isinstance(value, dict):
        raise InvalidRequestError(f"{path} must be an object, not {_kind(value)}", path)
    return value


def _string(item: Item, key: str, path: str, *, non_empty: bool = False) -> str:
    """A required string field (`non_empty`: and not empty)."""
    where = f"{path}.{key}"
    value = item.get(key)
    if not isinstance(value, str):
        raise _wrong(where, "a string", value)
    if non_empty and not value:
        raise InvalidRequestError(f"{where} is empty; it must be a non-empty string", where)
    return value


def _optional_string(item: Item, key: str, path: str) -> str | None:
    """An optional string field: absent and null both give None."""
    value = item.get(key)
    if value is None or isinstance(value, str):
        return value
    raise InvalidRequestError(f"{path}.{key} must be a string or null, not {_kind(value)}", f"{path}.{key}")


def _list(item: Item, key: str, path: str) -> list[object]:
    value = item.get(key)
    if not isinstance(value, list):
        raise _wrong(f"{path}.{key}", "an array", value)
    return value


# --- messages -------------------------------------------------------------------------------------------------


def _message(item: Item, path: str) -> Message:
    role = item.get("role")
    if not isinstance(role, str) or role not in _ROLES:
        raise InvalidRequestError(
            f"{path}.role is {_shown(role)}; expected one of user, assistant, system or developer", f"{path}.role"
        )
    content = item.get("content")
    where = f"{path}.content"
    if isinstance(content, str):
        if not content:
            raise InvalidRequestError(f"{where} is empty; a message needs some text or at least one part", where)
        return Message(role=_ROLES[role], content=[TextPart(content)])
    if not isinstance(content, list):
        raise _wrong(where, "a string or an array of content parts", content)
    if not content:
        raise InvalidRequestError(f"{where} is an empty array; a message needs at least one content part", where)
    return Message(role=_ROLES[role], content=[_part(raw, f"{where}[{i}]") for i, raw in enumerate(content)])


def _part(raw: object, path: str) -> Part:
    part = _object(raw, path)
    kind = part.get("type")
    if not isinstance(kind, str):
        raise InvalidRequestError(f"{path}.type is {_shown(kind)}; expected one of {_PART_TYPES}", f"{path}.type")
    if kind in _TEXT_PARTS:
        return TextPart(_string(part, "text", path))
    if kind == "refusal":
        return TextPart(_string(part, "refusal", path))
    if kind == "input_image":
        return _image(part, path)
    if kind == "input_file":
        return _file(part, path)
    raise InvalidRequestError(f"{path}.type {kind!r} is not supported; expected one of {_PART_TYPES}", f"{path}.type")


def _image(part: Item, path: str) -> ImagePart | FilePart:
    url = _optional_string(part, "image_url", path)
    file_id = _optional_string(part, "file_id", path)
    detail = part.get("detail")
    if detail is not None and (not isinstance(detail, str) or detail not in _DETAILS):
        raise InvalidRequestError(
            f"{path}.detail is {_shown(detail)}; expected one of auto, low, high or original", f"{path}.detail"
        )
    if url:
        if not url.startswith(_IMAGE_URL_SCHEMES):
            raise InvalidRequestError(
                f"{path}.image_url must be an http(s) URL or a base64 data URL (data:image/png;base64,...)",
                f"{path}.image_url",
            )
        return ImagePart(url, detail=_DETAILS[detail] if isinstance(detail, str) else "auto")
    if file_id:
        # Our ImagePart holds a URL; an uploaded file is a FilePart, which the Responses renderer sends as an
        # input_image by file id. Its exact media type is not known here.
        return FilePart(media_type="image/*", file_id=file_id)
    raise InvalidRequestError(
        f"{path}.image_url is missing; an input_image needs an image_url or a file_id", f"{path}.image_url"
    )


def _file(part: Item, path: str) -> FilePart:
    file_id = _optional_string(part, "file_id", path)
    data = _optional_string(part, "file_data", path)
    filename = _optional_string(part, "filename", path) or None
    if part.get("file_url") is not None:
        raise InvalidRequestError(
            f"{path}.file_url is not supported; send the file's content as file_data (a base64 data URL) or a file_id",
            f"{path}.file_url",
        )
    guessed = (mimetypes.guess_type(filename)[0] if filename else None) or "application/octet-stream"
    if file_id:
        return FilePart(media_type=guessed, file_id=file_id, filename=filename)
    if data:
        if data.startswith("data:") and ";base64," in data:
            header, encoded = data[5:].split(";base64,", 1)
            return FilePart(media_type=header or guessed, data=encoded, filename=filename)
        return FilePart(media_type=guessed, data=data, filename=filename)
    raise InvalidRequestError(
        f"{path}.file_data is missing; an input_file needs a file_id or file_data", f"{path}.file_data"
    )


# --- tools ----------------------------------------------------------------------------------------------------


def _function_call(item: Item, path: str, batch: str) -> ToolCall:
    return ToolCall(
        call_id=_string(item, "call_id", path, non_empty=True),
        name=_string(item, "name", path, non_empty=True),
        arguments=_string(item, "arguments", path),
        batch_id=batch,
    )


def _function_call_output(item: Item, path: str) -> ToolResult:
    call_id = _string(item, "call_id", path, non_empty=True)
    output = item.get("output")
    where = f"{path}.output"
    if isinstance(output, str):
        return ToolResult(call_id=call_id, output=output)
    if not isinstance(output, list):
        raise _wrong(where, "a string or an array of input_text parts", output)
    texts: list[str] = []
    for index, raw in enumerate(output):
        part_path = f"{where}[{index}]"
        part = _object(raw, part_path)
        kind = part.get("type")
        if kind not in _TEXT_PARTS:
            raise InvalidRequestError(
                f"{part_path}.type is {_shown(kind)}; tool outputs may only hold text (input_text parts)",
                f"{part_path}.type",
            )
        texts.append(_string(part, "text", part_path))
    return ToolResult(call_id=call_id, output="\n".join(texts))


def _mcp_call(item: Item, path: str, batch: str) -> tuple[ToolCall, ToolResult]:
    label = item.get("server_label")
    if label != BUILTIN_SERVER_LABEL:
        raise InvalidRequestError(
            f"{path}.server_label is {_shown(label)}; only mcp_call items of the built-in server "
            f"{BUILTIN_SERVER_LABEL!r} are accepted (other MCP servers are not supported)",
            f"{path}.server_label",
        )
    call_id = _string(item, "id", path, non_empty=True)
    call = ToolCall(
        call_id=call_id,
        name=_string(item, "name", path, non_empty=True),
        arguments=_string(item, "arguments", path),
        batch_id=batch,
    )
    output = _optional_string(item, "output", path)
    error = item.get("error")
    if error is None:
        if output is None:
            raise InvalidRequestError(
                f"{path}.output is missing and so is its error; only completed contextfold calls can be given back",
                f"{path}.output",
            )
        return call, ToolResult(call_id=call_id, output=output)
    text = output if output is not None else _error_text(_object(error, f"{path}.error"))
    return call, ToolResult(call_id=call_id, output=text, is_error=True)


def _error_text(error: Item) -> str:
    """The readable text of an MCP call error (protocol and HTTP errors carry a message, execution errors content)."""
    message = error.get("message")
    if isinstance(message, str):
        return message
    content = error.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        if texts:
            return "\n".join(texts)
    if content is not None:
        return json.dumps(content, default=str)
    return "the tool call failed"


# --- reasoning, compaction, references ------------------------------------------------------------------------


def _texts(item: Item, key: str, part_type: str, path: str) -> list[dict[str, str]]:
    """A list of `{type: part_type, text}` parts, normalised."""
    out: list[dict[str, str]] = []
    for index, raw in enumerate(_list(item, key, path)):
        part_path = f"{path}.{key}[{index}]"
        part = _object(raw, part_path)
        if part.get("type") != part_type:
            raise InvalidRequestError(f"{part_path}.type must be {part_type!r}", f"{part_path}.type")
        out.append({"type": part_type, "text": _string(part, "text", part_path)})
    return out


def _reasoning(item: Item, path: str) -> Reasoning:
    data: dict[str, Any] = {}
    reasoning_id = _optional_string(item, "id", path)
    if reasoning_id is not None:
        data["id"] = reasoning_id
    summary = _texts(item, "summary", "summary_text", path) if item.get("summary") is not None else []
    data["summary"] = summary
    encrypted = _optional_string(item, "encrypted_content", path)
    if encrypted is not None:
        data["encrypted_content"] = encrypted
    if item.get("content") is not None:
        data["content"] = _texts(item, "content", "reasoning_text", path)
    text = "\n\n".join(part["text"] for part in summary) or None
    return Reasoning(provider="openai", data=data, text=text)


def _compaction(item: Item, path: str) -> CompactionInput:
    return CompactionInput(id=_optional_string(item, "id", path), summary=_string(item, "encrypted_content", path))


def _item_reference(item: Item, path: str) -> ItemReference:
    return ItemReference(_string(item, "id", path, non_empty=True))


_PARSERS: dict[str, Callable[[Item, str], InputEntry]] = {
    "message": _message,
    "function_call_output": _function_call_output,
    "reasoning": _reasoning,
    "compaction": _compaction,
    "item_reference": _item_reference,
}
