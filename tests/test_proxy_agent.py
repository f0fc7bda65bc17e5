"""The issue's acceptance run: a scripted coding agent that resends its whole history (200 requests, tool outputs of
1-8 KB) works through a real `contextfold serve` process in front of a 32k-token upstream, on both wires.

Every upstream request is under the budget and grammar-valid; between compactions each one extends the previous
one byte for byte; compactions happen on at most 15 % of requests; the fact planted at request 3 is answered at
request 200 through hidden recall, which the client never sees. And streaming is real: the client gets the first
text delta while the upstream's stream is still held open.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .fakes.coding_agent import ClientOptions, CodingClient, CodingUpstream, UpstreamRequest, Wire
from .processes import Replica

WINDOW = 32_000
MAX_TOKENS = 1_024
REQUESTS = 200


@pytest.fixture
def upstream() -> Iterator[CodingUpstream]:
    with CodingUpstream(window=WINDOW) as fake:
        yield fake


def _proxy(tmp_path: Path, upstream: CodingUpstream, window: int = WINDOW) -> Replica:
    config = tmp_path / "proxy.toml"
    config.write_text(
        f"""
[[models]]
name = "coder"
provider = "openai-chat"
base_url = "{upstream.url}/v1"
api_key = "sk-proxy"
context_window = {window}

[[models]]
name = "claude-coder"
provider = "anthropic"
base_url = "{upstream.url}"
api_key = "sk-proxy"
context_window = {window}
"""
    )
    proxy = Replica(str(tmp_path / "proxy.db"), tmp_path / "proxy.log", "--config", str(config))
    proxy.wait_ready()
    return proxy


@pytest.mark.parametrize(
    ("wire", "model"),
    [
        ("openai-chat", "coder"),  # OpenAI client, OpenAI-compatible upstream
        ("anthropic", "claude-coder"),  # Anthropic client, Anthropic upstream
        ("anthropic", "coder"),  # a Claude-style client on an OpenAI-compatible (local) model
    ],
)
async def test_a_coding_agent_works_far_past_the_window(
    tmp_path: Path, upstream: CodingUpstream, wire: Wire, model: str
) -> None:
    proxy = _proxy(tmp_path, upstream)
    try:
        options = ClientOptions(requests=REQUESTS, wire=wire, model=model, max_tokens=MAX_TOKENS, stream=True)
        async with CodingClient(proxy.url, options) as client:
            run = await client.run()
        conversations = {exchange.conversation for exchange in run.exchanges}
        assert len(conversations) == 1, conversations
        (conversation,) = conversations
        async with httpx.AsyncClient(base_url=proxy.url) as http:
            context = (await http.get(f"/v1/conversations/{conversation}/context")).json()
    finally:
        proxy.stop()

    # the client's history went far past the window; nothing the upstream got did
    assert run.exchanges[-1].full_tokens > 3 * WINDOW
    agent = upstream.model_requests()
    assert not [r for r in upstream.requests if r.refused]
    assert max(r.tokens for r in upstream.requests) <= WINDOW - MAX_TOKENS
    for request in agent:
        check_grammar(request)

    # compactions are rare, and between them every request extends the one before it, byte for byte
    compactions = context["totals"]["compactions"]
    assert 1 <= compactions <= 0.15 * REQUESTS, compactions
    breaks = [n for n in range(1, len(agent)) if not extends(agent[n - 1], agent[n])]
    assert len(breaks) <= compactions, breaks

    # the fact from request 3 was folded away long ago, and is answered through recall the client never saw
    assert run.answer == f"The deploy code is {run.fact}."
    assert run.fact not in json.dumps(agent[-2].body)  # the question's first request did not hold it
    assert any(r.call is not None and r.call.name == "recall" for r in agent), "the model recalled it"
    assert all(call.name not in ("recall", "expand") for exchange in run.exchanges for call in exchange.calls)
    billed = sum(r.tokens for r in upstream.requests)
    full = sum(exchange.full_tokens for exchange in run.exchanges)
    assert billed < full / 3


@pytest.mark.parametrize("wire", ["openai-chat", "anthropic"])
async def test_text_reaches_the_client_while_the_upstream_is_still_streaming(tmp_path: Path, wire: Wire) -> None:
    gate = threading.Event()
    seen_open: list[bool] = []

    def on_text(_: str) -> None:
        if not seen_open:
            seen_open.append(fake.held.is_set())  # the upstream has sent one delta and holds the rest
            gate.set()

    with CodingUpstream(window=WINDOW, first_delta_gate=gate) as fake:
        proxy = _proxy(tmp_path, fake)
        try:
            model = "coder" if wire == "openai-chat" else "claude-coder"
            options = ClientOptions(requests=2, wire=wire, model=model, stream=True)
            async with CodingClient(proxy.url, options, on_text=on_text) as client:
                first = await client.step()
        finally:
            proxy.stop()
    assert seen_open == [True]
    assert first.text_deltas > 1


# --- checks on what the upstream received -------------------------------------------------------------------------


def extends(before: UpstreamRequest, after: UpstreamRequest) -> bool:
    """Whether `after` is `before` with messages added at the end, and every other field unchanged."""
    old, new = before.body, after.body
    messages_old, messages_new = old["messages"], new["messages"]
    same_rest = all(old.get(k) == new.get(k) for k in ("system", "tools", "tool_choice"))
    return same_rest and json.dumps(messages_new[: len(messages_old)]) == json.dumps(messages_old)


def check_grammar(request: UpstreamRequest) -> None:
    if request.wire == "anthropic":
        _anthropic_grammar(request.body)
    else:
        _chat_grammar(request.body)


def _chat_grammar(body: dict[str, Any]) -> None:
    """Every tool message answers a call of the assistant message right before its run of tool messages, and every
    call is answered before anything else is said."""
    waiting: set[str] = set()
    for message in body["messages"]:
        if message["role"] == "tool":
            assert message["tool_call_id"] in waiting, message
            waiting.discard(message["tool_call_id"])
            continue
        assert not waiting, f"calls {waiting} unanswered before a {message['role']} message"
        if message["role"] == "assistant":
            waiting = {call["id"] for call in message.get("tool_calls") or ()}
    assert not waiting, f"calls {waiting} unanswered at the end"


def _anthropic_grammar(body: dict[str, Any]) -> None:
    """User first, roles alternating, and each assistant tool_use answered by a tool_result in the next message."""
    messages = body["messages"]
    assert messages[0]["role"] == "user"
    waiting: set[str] = set()
    for n, message in enumerate(messages):
        assert message["role"] == ("user" if n % 2 == 0 else "assistant"), [m["role"] for m in messages]
        blocks = message["content"] if isinstance(message["content"], list) else []
        if message["role"] == "user":
            answered = {b["tool_use_id"] for b in blocks if b.get("type") == "tool_result"}
            assert answered == waiting, (answered, waiting)
            waiting = set()
        else:
            waiting = {b["id"] for b in blocks if b.get("type") == "tool_use"}
    assert not waiting


@pytest.mark.parametrize("summary", ["huge", "empty", "error"])
async def test_a_summariser_that_misbehaves_never_sends_a_request_over_budget(
    tmp_path: Path, upstream: CodingUpstream, summary: Any
) -> None:
    upstream.summary = summary
    window = 6_000  # small, so that masking old outputs is not enough and the summary tier runs
    proxy = _proxy(tmp_path, upstream, window)
    try:
        options = ClientOptions(requests=80, model="coder", max_tokens=MAX_TOKENS, output_bytes=(1_000, 2_000))
        async with CodingClient(proxy.url, options) as client:
            run = await client.run()
        (conversation,) = {exchange.conversation for exchange in run.exchanges}
        async with httpx.AsyncClient(base_url=proxy.url) as http:
            context = (await http.get(f"/v1/conversations/{conversation}/context")).json()
    finally:
        proxy.stop()
    assert upstream.summary_requests(), "the summariser was asked"
    # nothing refused, bar the summary requests the failing summariser answers with a 500 on purpose
    assert not [r for r in upstream.requests if r.refused and not (summary == "error" and r.summary)]
    assert max(r.tokens for r in upstream.model_requests()) <= window - MAX_TOKENS
    # the summary tier failed every time: the deterministic digest stood in for it
    assert context["latest_compaction"]["strategy"] in ("fallback", "mask"), context["latest_compaction"]
    assert context["summary"] is None or len(context["summary"]["text"]) < window
    assert run.answer == f"The deploy code is {run.fact}."
