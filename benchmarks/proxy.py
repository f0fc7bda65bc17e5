"""`proxy`: the time the compaction proxy adds to a request, and the upstream tokens it bills against forwarding the
client's full history.

Latency: a real server process (`python -m contextfold serve --upstream ...`) in front of the zero-latency fake
OpenAI-compatible upstream (its own process). A client that keeps its own history posts non-streaming Chat
Completions requests, resending everything each time (a user message of ~60 tokens and the echoed answer per
request). The added time of a request is its latency through the proxy less the latency of the same request body
sent to the upstream directly; it includes reading and hashing the whole history, matching it, appending the new
message, the fold and compaction checks, the upstream call and the answer's mapping.

Tokens: the scripted coding agent of the tests (`tests/fakes/coding_*`: tool outputs of 1-8 KB, a fact planted at
request 3 and asked for at the last one) runs once through the proxy in front of a 32k-token upstream, and once
straight against the same upstream with no window limit (what forwarding the full history costs).
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import httpx

from ._report import Table, median, ms, percentile
from ._stores import RESULTS, Context, progress
from .server import serve_process, upstream_process

QUESTION = "why does test {n} fail? " + "the assertion on line 42 compares the parsed config with the default " * 4


async def _requests(url: str, count: int, *, direct: bool) -> list[float]:
    """`count` requests of one growing history, each timed from send to the last byte of the answer."""
    history: list[dict[str, Any]] = [{"role": "system", "content": "You are a careful coding assistant."}]
    times = []
    path = "/chat/completions" if direct else "/v1/chat/completions"
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        for n in range(count):
            history.append({"role": "user", "content": QUESTION.format(n=n)})
            started = time.perf_counter()
            response = await client.post(path, json={"model": "bench", "messages": history})
            times.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(f"request {n}: {response.status_code} {response.text}")
            history.append({"role": "assistant", "content": _answer_text(response)})
    return times


def _answer_text(response: httpx.Response) -> str:
    if response.headers.get("content-type", "").startswith("text/event-stream"):  # the fake upstream always streams
        text = ""
        for line in response.text.splitlines():
            if line.startswith("data: {"):
                for choice in json.loads(line[6:])["choices"]:
                    text += choice["delta"].get("content") or ""
        return text
    content: str = response.json()["choices"][0]["message"]["content"]
    return content


async def _latency(ctx: Context) -> Table:
    count = 300 if ctx.quick else 1_000
    table = Table(
        f"Proxy: time added to a non-streaming Chat Completions request, one client resending its history for "
        f"{count:,} requests (target ≤ 3 ms p50)",
        [
            "requests",
            "history sent (KB)",
            "through the proxy p50 ms",
            "p95 ms",
            "upstream direct p50 ms",
            "added p50 ms",
        ],
    )
    with upstream_process() as upstream:
        direct = await _requests(upstream, count, direct=True)
        for leftover in RESULTS.glob("proxy.db*"):
            leftover.unlink()
        with serve_process(str(RESULTS / "proxy.db"), upstream) as url:
            progress("proxy: latency")
            proxied = await _requests(url, count, direct=False)
    per_request = len(QUESTION) + 100  # the question and the echoed answer, roughly
    for start in (0, count // 2, count - 100):
        part, base = proxied[start : start + 100], direct[start : start + 100]
        table.add(
            f"{start + 1:,}-{start + 100:,}",
            round((start + 50) * per_request / 1024),
            round(ms(median(part)), 2),
            round(ms(percentile(part, 0.95)), 2),
            round(ms(median(base)), 2),
            round(ms(median(part) - median(base)), 2),
        )
    table.notes.append(
        "SQLite store; a 32,000-token window, so the conversation compacts as it grows while the client's history "
        "keeps growing. The direct baseline is the same body sent to the upstream."
    )
    return table


async def _tokens(ctx: Context) -> Table:
    from tests.fakes.coding_agent import ClientOptions, CodingClient, CodingUpstream, Wire

    requests = 100 if ctx.quick else 200
    table = Table(
        f"Proxy: a scripted coding agent resending its history, {requests} requests, tool outputs 1-8 KB, a "
        f"{CODING_WINDOW:,}-token upstream",
        [
            "client wire",
            "full history billed (tokens)",
            "through the proxy billed",
            "saved",
            "peak request",
            "compactions",
            "requests extending the previous one",
            "fact from request 3 answered",
        ],
    )
    wires: tuple[tuple[Wire, str], ...] = (("openai-chat", "coder"), ("anthropic", "claude-coder"))
    for wire, model in wires:
        progress(f"proxy: coding agent, {wire}")
        with CodingUpstream(window=CODING_WINDOW) as upstream:
            db = RESULTS / f"proxy-agent-{wire}.db"
            for leftover in RESULTS.glob(f"{db.name}*"):
                leftover.unlink()
            config = RESULTS / "proxy-agent.toml"
            config.write_text(_routes(upstream.url))
            with serve_process(str(db), upstream.url + "/v1", "--config", str(config)) as url:
                options = ClientOptions(requests=requests, wire=wire, model=model, max_tokens=1_024)
                async with CodingClient(url, options) as client:
                    run = await client.run()
                conversation = run.exchanges[-1].conversation
                async with httpx.AsyncClient(base_url=url) as http:
                    context = (await http.get(f"/v1/conversations/{conversation}/context")).json()
        agent = upstream.model_requests()
        extending = sum(_extends(a.body, b.body) for a, b in itertools.pairwise(agent))
        billed = sum(r.tokens for r in upstream.requests)
        full = sum(exchange.full_tokens for exchange in run.exchanges)
        table.add(
            wire,
            full,
            billed,
            f"{100 * (1 - billed / full):.0f} %",
            max(r.tokens for r in upstream.requests),
            context["totals"]["compactions"],
            f"{100 * extending / (len(agent) - 1):.1f} %",
            "yes" if run.answer == f"The deploy code is {run.fact}." else "no",
        )
    table.notes.append(
        "Tokens are the fake upstream's count (characters / 4), summary requests included in what the proxy billed. "
        "The full-history column is what the same client costs sent straight to an upstream with no window limit. "
        "The fact is answered through hidden recall: the model calls `recall`, the proxy answers, the client never "
        "sees the call."
    )
    return table


CODING_WINDOW = 32_000


def _routes(upstream: str) -> str:
    common = f'api_key = "sk-bench"\ncontext_window = {CODING_WINDOW}\n'
    return (
        f'[[models]]\nname = "coder"\nprovider = "openai-chat"\nbase_url = "{upstream}/v1"\n{common}\n'
        f'[[models]]\nname = "claude-coder"\nprovider = "anthropic"\nbase_url = "{upstream}"\n{common}'
    )


def _extends(before: dict[str, Any], after: dict[str, Any]) -> bool:
    old, new = before["messages"], after["messages"]
    same = all(before.get(k) == after.get(k) for k in ("system", "tools"))
    return same and json.dumps(new[: len(old)]) == json.dumps(old)


async def run(ctx: Context) -> list[Table]:
    return [await _latency(ctx), await _tokens(ctx)]
