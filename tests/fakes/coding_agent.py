"""A scripted coding agent and its fake upstream model, for the proxy's tests and benchmarks (no pytest needed).

    with CodingUpstream(window=30_000) as upstream:
        async with CodingClient(upstream.url, ClientOptions(requests=30, wire="anthropic")) as client:
            run = await client.run()
        assert run.answer == f"The deploy code is {run.fact}."
        full_history_tokens(run.exchanges)          # what forwarding the full history costs

The parts: `coding_model` (what the fake model sees, counts and answers, wire-free), `coding_wire` (its two wire
formats), `coding_upstream` (it served on loopback), `coding_outputs` (the client's tool outputs and task texts),
`coding_client` (the client).
"""

from __future__ import annotations

from .coding_client import (
    QUESTION,
    SYSTEM_PROMPT,
    ClientOptions,
    CodingClient,
    Exchange,
    MadeCall,
    Run,
    full_history_tokens,
)
from .coding_model import CLIENT_TOOLS, FACT_NAME, Answer, Call, Prompt, Result, Text, decide, find_fact
from .coding_upstream import CodingUpstream, SummaryMode, UpstreamRequest
from .coding_wire import Wire, count_tokens, prompt_of

__all__ = [
    "CLIENT_TOOLS",
    "FACT_NAME",
    "QUESTION",
    "SYSTEM_PROMPT",
    "Answer",
    "Call",
    "ClientOptions",
    "CodingClient",
    "CodingUpstream",
    "Exchange",
    "MadeCall",
    "Prompt",
    "Result",
    "Run",
    "SummaryMode",
    "Text",
    "UpstreamRequest",
    "Wire",
    "count_tokens",
    "decide",
    "find_fact",
    "full_history_tokens",
    "prompt_of",
]
