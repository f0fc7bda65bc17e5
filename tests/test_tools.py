"""Tools from Python functions: schemas from signatures and docstrings, argument checks, outputs, and failures."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from typing import Any, Literal

import msgspec
import pytest

from contextfold import InvalidRequestError
from contextfold.models import ToolCallRequest
from contextfold.runtime import Tool, ToolOutput, tool


class Point(msgspec.Struct):
    x: int
    y: int


def forecast(city: str, days: int = 3, unit: Literal["c", "f"] = "c", tags: list[str] | None = None) -> str:
    """Get the weather forecast.

    Uses the national service.

    Args:
        city: The city name.
        days: How many days ahead.
    """
    return f"{city} {days} {unit} {tags}"


def test_the_schema_comes_from_the_signature_and_the_docstring() -> None:
    made = Tool(forecast)
    assert made.name == "forecast"
    assert made.description == "Get the weather forecast.\n\nUses the national service."
    assert made.parameters == {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "The city name."},
            "days": {"type": "integer", "default": 3, "description": "How many days ahead."},
            "unit": {"enum": ["c", "f"], "default": "c"},
            "tags": {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}], "default": None},
        },
        "required": ["city"],
        "additionalProperties": False,
    }
    assert made.spec.name == "forecast"


def test_nested_types_keep_their_definitions() -> None:
    def plot(points: list[Point]) -> int:
        return len(points)

    made = Tool(plot)
    assert made.parameters["properties"]["points"] == {"type": "array", "items": {"$ref": "#/$defs/Point"}}
    assert made.parameters["$defs"]["Point"]["required"] == ["x", "y"]


def test_decorator_forms_and_overrides() -> None:
    @tool
    def plain() -> str:
        return "p"

    @tool(name="renamed", description="Does things.", timeout=2)
    def original() -> str:
        return "o"

    assert (plain.name, original.name, original.description, original.timeout) == (
        "plain",
        "renamed",
        "Does things.",
        2,
    )


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (lambda *args: None, "is not valid"),
        (functools.partial(forecast, "Oslo"), "tool name '' is not valid"),
    ],
)
def test_functions_that_cannot_be_tools_get_clear_errors(fn: Callable[..., Any], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        Tool(fn)


def test_star_arguments_and_unschematic_types_are_refused() -> None:
    def spread(*names: str) -> str:
        return ""

    def opaque(lock: threading.Lock) -> str:
        return ""

    with pytest.raises(InvalidRequestError, match=r"\*args and \*\*kwargs cannot be described"):
        Tool(spread)
    with pytest.raises(InvalidRequestError, match="has no JSON schema"):
        Tool(opaque)


async def test_arguments_are_checked_and_converted() -> None:
    made = Tool(forecast)
    ok = await made.run(ToolCallRequest("c1", "forecast", '{"city": "Oslo", "tags": ["x"]}'), time_limit=5)
    assert (ok.output, ok.is_error) == ("Oslo 3 c ['x']", False)
    wrong = await made.run(ToolCallRequest("c2", "forecast", '{"city": "Oslo", "unit": "k"}'), time_limit=5)
    assert wrong.is_error
    assert "invalid arguments for forecast" in wrong.output
    assert "$.unit" in wrong.output
    extra = await made.run(ToolCallRequest("c3", "forecast", '{"city": "Oslo", "colour": 1}'), time_limit=5)
    assert extra.is_error
    assert "colour" in extra.output
    empty = await made.run(ToolCallRequest("c4", "forecast", ""), time_limit=5)
    assert empty.is_error
    assert "city" in empty.output


async def test_outputs_of_every_kind_become_text() -> None:
    def structured() -> dict[str, int]:
        return {"a": 1}

    def summarised() -> ToolOutput:
        return ToolOutput("long output", summary="short")

    def nothing() -> None:
        return None

    call = ToolCallRequest("c", "x", "{}")
    assert (await Tool(structured).run(call, time_limit=5)).output == '{"a":1}'
    outcome = await Tool(summarised).run(call, time_limit=5)
    assert (outcome.output, outcome.summary) == ("long output", "short")
    assert (await Tool(nothing).run(call, time_limit=5)).output == ""


async def test_sync_tools_run_off_the_event_loop() -> None:
    loop_thread = threading.get_ident()

    def where() -> bool:
        return threading.get_ident() != loop_thread

    outcome = await Tool(where).run(ToolCallRequest("c", "where", "{}"), time_limit=5)
    assert outcome.output == "true"


async def test_a_tool_timeout_wins_over_the_default() -> None:
    async def sleepy() -> str:
        await asyncio.Event().wait()
        return "never"

    made = Tool(sleepy, timeout=0.01)
    outcome = await made.run(ToolCallRequest("c", "sleepy", "{}"), time_limit=60)
    assert (outcome.is_error, outcome.output) == (True, "sleepy timed out after 0.01s")


async def test_closures_of_one_definition_share_the_schema_not_the_function() -> None:
    # The built-in tools are closures made for every turn; their argument type is built once per definition.
    def make(owner: str) -> Tool:
        def lookup(query: str, limit: int = 3) -> str:
            """Look something up.

            Args:
                query: what to look for
            """
            return f"{owner}: {query} x{limit}"

        return Tool(lookup)

    first, second = make("a"), make("b")
    assert first.parameters == second.parameters
    assert first.parameters is not second.parameters
    assert first.parameters["properties"]["query"]["description"] == "what to look for"
    first.parameters["properties"].clear()  # one tool's schema changed by its owner leaves the other's alone
    assert second.parameters["properties"]
    call = ToolCallRequest("c1", "lookup", '{"query": "q"}')
    assert (await first.run(call, time_limit=5)).output == "a: q x3"
    assert (await second.run(call, time_limit=5)).output == "b: q x3"
