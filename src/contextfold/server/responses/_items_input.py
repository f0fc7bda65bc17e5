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
- a run of consecutive calls (`function_call`, `mcp_call`, `file_search_call`, `mcp_approval_request`) ->
  `ToolCall`s sharing one new batch id (the model's parallel calls); the results that hosted call items carry
  follow the run's calls, so the batch stays one group of calls followed by results. What each tool item means is
  in `_items_tools`;
- `reasoning` -> `Reasoning(provider="openai")` whose `data` keeps what was given (id, summary, encrypted_content,
  content) so it can be passed back upstream, and whose `text` is the summary texts joined;
- `compaction` -> `CompactionInput`, `item_reference` (or an object with only an `id`) -> `ItemReference`.
Event ids, turn ids and sequence numbers are left for the server to stamp.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from ..._errors import InvalidRequestError, PayloadTooLargeError
from ...events import Event, FilePart, ImagePart, Message, Part, Reasoning, Role, TextPart, ToolCall, ToolResult, new_id
from ..edge._items_fields import _TEXT_PARTS, Item, _kind, _list, _object, optional_string_at, shown, string_at, wrong
from ._items_tools import (
    BUILTIN_SERVER_LABEL,
    RUN_ITEMS,
    ApprovalInput,
    approval_response,
    check_listing,
    function_call,
    function_call_output,
)

_ROLES: dict[str, Role] = {"user": "user", "system": "system", "developer": "developer", "assistant": "assistant"}
_PART_TYPES = "input_text, output_text, text, refusal, input_image or input_file"
_ITEM_TYPES = (
    "message, function_call, function_call_output, reasoning, compaction, item_reference, mcp_call, "
    "file_search_call, mcp_list_tools, mcp_approval_request or mcp_approval_response"
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


InputEntry = Event | CompactionInput | ItemReference | ApprovalInput
__all__ = ["BUILTIN_SERVER_LABEL", "ApprovalInput", "CompactionInput", "InputEntry", "ItemReference", "parse_input"]


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
            call = self._unique(function_call(item, path, self._batch()), f"{path}.call_id")
            self.out.append(call)
            self.waiting[call.call_id] = path
            return
        run_item = RUN_ITEMS.get(kind)
        if run_item is not None:  # an approval request waits for its mcp_approval_response, not for an output
            call, result = run_item(item, path, self._batch())
            self.out.append(self._unique(call, f"{path}.id"))
            if result is not None:
                self.run_results.append(result)
            return
        if kind == "mcp_list_tools":
            check_listing(item, path)
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


# --- messages -------------------------------------------------------------------------------------------------


def _message(item: Item, path: str) -> Message:
    role = item.get("role")
    if not isinstance(role, str) or role not in _ROLES:
        raise InvalidRequestError(
            f"{path}.role is {shown(role)}; expected one of user, assistant, system or developer", f"{path}.role"
        )
    content = item.get("content")
    where = f"{path}.content"
    if isinstance(content, str):
        if not content:
            raise InvalidRequestError(f"{where} is empty; a message needs some text or at least one part", where)
        return Message(role=_ROLES[role], content=[TextPart(content)])
    if not isinstance(content, list):
        raise wrong(where, "a string or an array of content parts", content)
    if not content:
        raise InvalidRequestError(f"{where} is an empty array; a message needs at least one content part", where)
    return Message(role=_ROLES[role], content=[_part(raw, f"{where}[{i}]") for i, raw in enumerate(content)])


def _part(raw: object, path: str) -> Part:
    part = _object(raw, path)
    kind = part.get("type")
    if not isinstance(kind, str):
        raise InvalidRequestError(f"{path}.type is {shown(kind)}; expected one of {_PART_TYPES}", f"{path}.type")
    if kind in _TEXT_PARTS:
        return TextPart(string_at(part, "text", path))
    if kind == "refusal":
        return TextPart(string_at(part, "refusal", path))
    if kind == "input_image":
        return _image(part, path)
    if kind == "input_file":
        return _file(part, path)
    raise InvalidRequestError(f"{path}.type {kind!r} is not supported; expected one of {_PART_TYPES}", f"{path}.type")


def _image(part: Item, path: str) -> ImagePart | FilePart:
    url = optional_string_at(part, "image_url", path)
    file_id = optional_string_at(part, "file_id", path)
    detail = part.get("detail")
    if detail is not None and (not isinstance(detail, str) or detail not in _DETAILS):
        raise InvalidRequestError(
            f"{path}.detail is {shown(detail)}; expected one of auto, low, high or original", f"{path}.detail"
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
    file_id = optional_string_at(part, "file_id", path)
    data = optional_string_at(part, "file_data", path)
    filename = optional_string_at(part, "filename", path) or None
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


# --- reasoning, compaction, references ------------------------------------------------------------------------


def _texts(item: Item, key: str, part_type: str, path: str) -> list[dict[str, str]]:
    """A list of `{type: part_type, text}` parts, normalised."""
    out: list[dict[str, str]] = []
    for index, raw in enumerate(_list(item, key, path)):
        part_path = f"{path}.{key}[{index}]"
        part = _object(raw, part_path)
        if part.get("type") != part_type:
            raise InvalidRequestError(f"{part_path}.type must be {part_type!r}", f"{part_path}.type")
        out.append({"type": part_type, "text": string_at(part, "text", part_path)})
    return out


def _reasoning(item: Item, path: str) -> Reasoning:
    data: dict[str, Any] = {}
    reasoning_id = optional_string_at(item, "id", path)
    if reasoning_id is not None:
        data["id"] = reasoning_id
    summary = _texts(item, "summary", "summary_text", path) if item.get("summary") is not None else []
    data["summary"] = summary
    encrypted = optional_string_at(item, "encrypted_content", path)
    if encrypted is not None:
        data["encrypted_content"] = encrypted
    if item.get("content") is not None:
        data["content"] = _texts(item, "content", "reasoning_text", path)
    text = "\n\n".join(part["text"] for part in summary) or None
    return Reasoning(provider="openai", data=data, text=text)


def _compaction(item: Item, path: str) -> CompactionInput:
    return CompactionInput(id=optional_string_at(item, "id", path), summary=string_at(item, "encrypted_content", path))


def _item_reference(item: Item, path: str) -> ItemReference:
    return ItemReference(string_at(item, "id", path, non_empty=True))


_PARSERS: dict[str, Callable[[Item, str], InputEntry]] = {
    "message": _message,
    "function_call_output": function_call_output,
    "mcp_approval_response": approval_response,
    "reasoning": _reasoning,
    "compaction": _compaction,
    "item_reference": _item_reference,
}
