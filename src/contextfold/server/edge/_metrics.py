"""Prometheus metrics: turns, latency, tokens in and out, compactions, tokens saved, errors.

Each app gets its own registry (so two apps in one test process do not collide); `/metrics` renders it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from ...compaction import CompactionResult
from ...store import ResponseRecord
from ...view._grammar import REPAIRS


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "contextfold_http_requests", "HTTP requests by route and status", ["method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "contextfold_http_request_seconds",
            "HTTP request latency (to the last byte for streams)",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.turns = Counter("contextfold_turns", "Turns by final status", ["status"], registry=r)
        self.tokens = Counter("contextfold_tokens", "Model tokens by direction", ["direction"], registry=r)
        self.compactions = Counter("contextfold_compactions", "Compactions by strategy", ["strategy"], registry=r)
        self.tokens_saved = Counter(
            "contextfold_compaction_tokens_saved", "Tokens removed from views by compaction", registry=r
        )
        self.background = Counter(
            "contextfold_background_compactions",
            "Background compactions by outcome (committed, discarded, recomputed, nothing, failed, cancelled)",
            ["outcome"],
            registry=r,
        )
        self.errors = Counter("contextfold_errors", "Error responses by code", ["code"], registry=r)
        r.register(_GrammarRepairs())

    def observe_response(self, response: dict[str, Any], record: ResponseRecord) -> None:
        self.turns.labels(response["status"]).inc()
        usage = response.get("usage") or {}
        self.tokens.labels("input").inc(usage.get("input_tokens", 0))
        self.tokens.labels("output").inc(usage.get("output_tokens", 0))

    def observe_compaction(self, strategy: str, tokens_before: int, tokens_after: int) -> None:
        self.compactions.labels(strategy).inc()
        self.tokens_saved.inc(max(0, tokens_before - tokens_after))

    def observe_background(self, outcome: str, result: CompactionResult | None) -> None:
        self.background.labels(outcome).inc()
        if result is not None:
            self.observe_compaction(result.strategy or "", result.tokens_before, result.tokens_after)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _GrammarRepairs(Collector):
    """Windows the runtime repaired before sending them (invariant 6), by provider: counted where the runtime
    checks, in the process, and read here at each scrape."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "contextfold_grammar_repairs", "Windows repaired before a send (a bug made visible)", labels=["provider"]
        )
        for provider, count in sorted(REPAIRS.items()):
            family.add_metric([provider], count)
        yield family
