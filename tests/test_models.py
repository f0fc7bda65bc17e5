"""The scripted model that ships with the library: it plays its script, records calls, and never passes silently."""

from __future__ import annotations

import pytest

from contextfold import ModelResponse, ModelResponseError, ModelSettings, ScriptedModel
from contextfold.view import Window

WINDOW = Window(None, None, None, [])


async def test_plays_the_script_in_order_and_records_calls() -> None:
    model = ScriptedModel(["first", ModelResponse(text="second", input_tokens=7), lambda w: f"{len(w.items)} items"])
    assert (await model.request(WINDOW, ModelSettings())).text == "first"
    assert (await model.request(WINDOW, ModelSettings())).input_tokens == 7
    assert (await model.request(WINDOW, ModelSettings(max_output_tokens=5))).text == "0 items"
    assert [settings.max_output_tokens for _, settings in model.calls] == [None, None, 5]
    model.assert_consumed()


async def test_raises_scripted_errors_and_fails_past_the_script() -> None:
    model = ScriptedModel([ValueError("boom")])
    with pytest.raises(ValueError, match="boom"):
        await model.request(WINDOW, ModelSettings())
    with pytest.raises(ModelResponseError, match="no step left for call 2"):
        await model.request(WINDOW, ModelSettings())


def test_unconsumed_steps_fail_the_test() -> None:
    model = ScriptedModel(["never used"])
    with pytest.raises(AssertionError, match="1 unconsumed step"):
        model.assert_consumed()
