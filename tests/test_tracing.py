"""OpenTelemetry traces, read back with the SDK's in-memory exporter: a span per turn, per step, per upstream call and
per store round trip, with token counts and compaction figures; the trace id on log records; and without the extra
(simulated by hiding the packages in a subprocess) nothing breaks and a configured exporter names the extra."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from contextfold import Agent, AgentOptions, ScriptedModel, open_store, tool
from contextfold._tracing import TraceIdFilter, span
from contextfold.models import ModelResponse, ToolCallRequest
from contextfold.server._main import JsonFormatter

from .fakes._server import FakeServer, Reply
from .processes import Replica

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    # The global provider can be set once per process: the first test sets it, every test clears the exporter.
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def _attrs(s: ReadableSpan) -> dict[str, Any]:
    return dict(s.attributes or {})


def _children(of: ReadableSpan, every: tuple[ReadableSpan, ...]) -> list[ReadableSpan]:
    assert of.context is not None
    return [s for s in every if s.parent is not None and s.parent.span_id == of.context.span_id]


@tool
def lookup(city: str) -> str:
    """The weather."""
    return f"{city}: rain"


async def test_a_turn_is_a_tree_of_spans(tmp_path: Path, spans: InMemorySpanExporter) -> None:
    call = ModelResponse(text="", tool_calls=[ToolCallRequest("c1", "lookup", '{"city": "Oslo"}')], input_tokens=40)
    model = ScriptedModel([call, ModelResponse(text="It rains.", input_tokens=60, output_tokens=5)])
    store = await open_store(str(tmp_path / "t.db"))
    try:
        agent = Agent(model, store=store, tools=[lookup], options=AgentOptions(context_window=8_000))
        session = await agent.create_session()
        spans.clear()
        result = await session.turn("weather in Oslo?")
    finally:
        await store.close()
    every = spans.get_finished_spans()
    (turn,) = [s for s in every if s.name == "contextfold.turn"]
    assert _attrs(turn)["contextfold.turn_id"] == result.turn_id
    assert _attrs(turn)["contextfold.outcome"] == "completed"
    assert _attrs(turn)["contextfold.input_tokens"] == 100
    steps = _children(turn, every)
    kinds = [_attrs(s).get("contextfold.step_type") for s in steps if s.name == "contextfold.step"]
    assert kinds == ["inference", "tool_execution", "inference"]
    first, tools, last = (s for s in steps if s.name == "contextfold.step")
    assert _attrs(first)["contextfold.tool_calls"] == 1
    assert _attrs(first)["contextfold.stop_reason"] == "tool_calls"
    assert _attrs(tools)["contextfold.tools"] == "lookup"
    assert _attrs(last)["contextfold.input_tokens"] == 60
    calls = [s for s in _children(first, every) if s.name == "contextfold.model.call"]
    assert len(calls) == 1
    assert _attrs(calls[0])["contextfold.model"] == "scripted"
    assert _attrs(calls[0])["contextfold.input_tokens"] == 40
    stores = [s for s in every if s.name == "contextfold.store"]
    assert stores
    assert {_attrs(s)["db.system"] for s in stores} == {"sqlite"}
    assert all(s.context is not None and s.context.trace_id == turn.context.trace_id for s in steps + stores[-2:])


async def test_a_compaction_step_carries_its_figures(tmp_path: Path, spans: InMemorySpanExporter) -> None:
    model = ScriptedModel(["answer " * 80] * 20)
    store = await open_store(str(tmp_path / "c.db"))
    try:
        options = AgentOptions(context_window=1_500, max_output_tokens=200, compactor="deterministic")
        session = await Agent(model, store=store, options=options).create_session()
        for n in range(10):
            await session.turn(f"question {n} " + "words " * 40)
    finally:
        await store.close()
    compactions = [s for s in spans.get_finished_spans() if _attrs(s).get("contextfold.step_type") == "compaction"]
    assert compactions
    figures = _attrs(compactions[0])
    assert figures["contextfold.compaction.compacted"] is True
    assert figures["contextfold.compaction.tokens_before"] > figures["contextfold.compaction.tokens_after"]
    assert figures["contextfold.compaction.strategy"] in ("mask", "fallback")


async def test_a_failed_upstream_call_is_an_error_span(tmp_path: Path, spans: InMemorySpanExporter) -> None:
    from contextfold import ModelUnavailableError

    model = ScriptedModel([ModelUnavailableError("down", status=503)])
    store = await open_store(str(tmp_path / "f.db"))
    try:
        session = await Agent(model, store=store, options=AgentOptions(context_window=8_000)).create_session()
        with pytest.raises(ModelUnavailableError):
            await session.turn("hi")
    finally:
        await store.close()
    every = spans.get_finished_spans()
    (call,) = [s for s in every if s.name == "contextfold.model.call"]
    assert call.status.status_code == trace.StatusCode.ERROR
    (turn,) = [s for s in every if s.name == "contextfold.turn"]
    assert _attrs(turn)["contextfold.outcome"] == "failed"
    assert _attrs(turn)["contextfold.error_kind"] == "ModelUnavailableError"


def test_log_records_carry_the_trace_id(spans: InMemorySpanExporter) -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(TraceIdFilter())
    log = logging.getLogger("contextfold.test.tracing")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        with span("contextfold.turn") as current:
            log.info("inside")
        log.info("outside")
    finally:
        log.removeHandler(handler)
    inside, outside = records
    assert inside.trace_id == f"{current.get_span_context().trace_id:032x}"  # type: ignore[attr-defined]
    assert '"trace_id": "' + inside.trace_id in JsonFormatter().format(inside)  # type: ignore[attr-defined]
    assert not hasattr(outside, "trace_id")


_HIDE = """
import sys
class Hide:
    def find_spec(self, name, path=None, target=None):
        if any(name == p or name.startswith(p + ".") for p in {hidden!r}):
            raise ImportError("hidden for the test")
sys.meta_path.insert(0, Hide())
"""
_WITHOUT_OTEL = _HIDE.format(hidden=("opentelemetry",))
_WITHOUT_THE_EXTRA = _HIDE.format(hidden=("opentelemetry.sdk", "opentelemetry.exporter"))
"""Only what the extra adds: recent FastAPI imports the OpenTelemetry API itself."""


def test_without_the_extra_nothing_breaks_and_an_exporter_names_it(tmp_path: Path) -> None:
    script = _WITHOUT_OTEL + textwrap.dedent(
        f"""
        import asyncio
        from contextfold import Agent, AgentOptions, ScriptedModel, open_store, _tracing
        from contextfold._errors import ConfigurationError

        async def main():
            store = await open_store({str(tmp_path / "n.db")!r})
            agent = Agent(ScriptedModel(["hi"]), store=store, options=AgentOptions(context_window=8000))
            session = await agent.create_session()
            print((await session.turn("hello")).final_text)
            await store.close()

        asyncio.run(main())
        assert not _tracing.available()
        try:
            _tracing.configure("http://127.0.0.1:4318")
        except ConfigurationError as exc:
            print(exc)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    answer, message = done.stdout.splitlines()
    assert answer == "hi"
    assert "pip install 'contextfold[otel]'" in message
    assert "otel_endpoint" in message


def test_serve_with_an_endpoint_but_no_extra_fails_naming_it(tmp_path: Path) -> None:
    script = _WITHOUT_THE_EXTRA + textwrap.dedent(
        f"""
        from contextfold.cli import main
        raise SystemExit(main(["serve", "--db", {str(tmp_path / "s.db")!r}, "--port", "1",
                               "--otel-endpoint", "http://127.0.0.1:4318"]))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "contextfold[otel]" in done.stderr


def test_serve_exports_its_spans_over_otlp(tmp_path: Path) -> None:
    """A real server process with --otel-endpoint: its spans reach a loopback collector as OTLP/HTTP protobuf."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    with FakeServer() as collector:
        collector.handler = lambda request: Reply(200, json={})
        replica = Replica(
            str(tmp_path / "o.db"), tmp_path / "log", "--otel-endpoint", collector.url, "--log-format", "json"
        )
        try:
            replica.wait_ready()
            reply = httpx.post(f"{replica.url}/v1/responses", json={"input": "hello"}, timeout=60)
            assert reply.status_code == 200
        finally:
            assert replica.stop() == 0  # shutting down flushes the batch of spans
        names: set[str] = set()
        for request in collector.requests:
            assert request.path == "/v1/traces"
            assert {k.lower(): v for k, v in request.headers.items()}["content-type"] == "application/x-protobuf"
            export = ExportTraceServiceRequest.FromString(request.body)
            for resource in export.resource_spans:
                for scope in resource.scope_spans:
                    names.update(s.name for s in scope.spans)
        assert {"contextfold.turn", "contextfold.step", "contextfold.model.call", "contextfold.store"} <= names


async def test_store_round_trips_are_spans_on_both_backends(store: Any, spans: InMemorySpanExporter) -> None:
    from contextfold import Conversation

    spans.clear()
    with span("contextfold.turn") as outer:
        conversation = await Conversation.create(store)
        await conversation.refresh()
    stores = [s for s in spans.get_finished_spans() if s.name == "contextfold.store"]
    assert stores
    system = {_attrs(s)["db.system"] for s in stores}
    assert system == ({"sqlite"} if "SQLite" in type(store).__name__ else {"postgresql"})
    parent = outer.get_span_context().span_id
    assert all(s.parent is not None and s.parent.span_id == parent for s in stores)
