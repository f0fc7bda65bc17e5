"""Token accounting: estimates cached on events, calibrated per model, anchored on reported usage."""

from __future__ import annotations

from contextfold import Conversation, Store, TokenEstimator
from contextfold.events import ImagePart, Message, ToolCall, Usage, user
from contextfold.view import DEFAULT_CHARS_PER_TOKEN


def test_estimates_scale_with_text_and_count_images() -> None:
    estimator = TokenEstimator()
    short, long = estimator.estimate(user("hi")), estimator.estimate(user("hello world " * 100))
    assert short < long
    assert abs(long - 1200 / DEFAULT_CHARS_PER_TOKEN) < 10
    image = Message(role="user", content=[ImagePart(url="https://example.invalid/cat.png")])
    assert estimator.estimate(image) >= 765
    assert estimator.estimate(ToolCall(call_id="c", name="f", arguments='{"a": 1}', batch_id="b")) > 0


def test_calibration_converges_on_the_reported_ratio() -> None:
    estimator = TokenEstimator()
    text = "x" * 4000  # a model that really sees 4000 chars as 500 tokens: 8 chars per token
    for _ in range(12):
        estimated = estimator.estimate(user(text), "m")
        estimator.calibrate("m", estimated, 500)
    assert abs(estimator.estimate(user(text), "m") - 500) < 15
    assert estimator.ratio("other") == DEFAULT_CHARS_PER_TOKEN  # per model
    estimator.calibrate("m", 0, 10)  # nonsense reports are ignored
    estimator.calibrate("m", 10, 0)


async def test_appended_events_carry_their_estimate_and_usage_calibrates(sqlite_store: Store) -> None:
    conv = await Conversation.create(sqlite_store, model="m")
    (stored,) = await conv.append(user("a" * 700))
    assert stored.tokens == conv.estimator.estimate(user("a" * 700), "m") > 0
    assert (await sqlite_store.read(conv.id))[0].tokens == stored.tokens  # cached in the log
    estimated = conv.view.estimated_tokens
    await conv.append(Usage(model="m", input_tokens=estimated * 2, output_tokens=3, estimated_input_tokens=estimated))
    assert conv.view.tokens == estimated * 2  # anchored on what the provider reported
    assert conv.estimator.ratio("m") < DEFAULT_CHARS_PER_TOKEN
    (again,) = await conv.append(user("a" * 700))
    assert again.tokens > stored.tokens  # later estimates use the calibrated ratio
