"""OpenTelemetry traces, with the optional `otel` extra (`pip install 'contextfold[otel]'`); no-ops without it.

    contextfold.turn                    a turn: its id, session, model; steps, usage, outcome
      contextfold.step                  a step: inference (tokens, stop reason, calls), tool_execution (tools,
                                        errors, server side) or compaction (strategy, tokens before and after)
        contextfold.model.call          one upstream call (an attempt): model, provider, tokens, outcome
        contextfold.store               one store round trip: backend and operation

Spans go to the global tracer provider: an application that sets up OpenTelemetry gets them with no more to do;
`contextfold serve --otel-endpoint URL` (or `CONTEXTFOLD_OTEL_ENDPOINT`, or `otel_endpoint` in the config file)
sets one up exporting OTLP over HTTP. `TraceIdFilter` puts the current trace id on every log record, so a log line
leads to its trace. With the extra absent nothing breaks: spans cost nothing, and only a configured exporter fails,
with a message naming the extra. With the extra installed but no tracer provider set (OpenTelemetry's deferred
proxy still in place), spans cost nothing either: no tracer is asked for one, no context is attached; they start
as soon as a provider is set.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

from ._errors import ConfigurationError

_trace: Any
_context: Any
try:
    from opentelemetry import context as _otel_context
    from opentelemetry import trace as _otel_trace

    _trace, _context = _otel_trace, _otel_context
except ImportError:  # the extra is not installed: every span is a no-op
    _trace = _context = None

TRACER = "contextfold"
Attributes = dict[str, str | int | float | bool]


class _NoSpan:
    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def set_attributes(self, attributes: Any) -> None:
        pass

    def record_exception(self, exception: BaseException) -> None:
        pass

    def set_status(self, *args: Any) -> None:
        pass

    def end(self) -> None:
        pass


_NOOP = _NoSpan()
_OFF: tuple[type, ...] = ()
"""The tracer providers that stand for "not configured": OpenTelemetry's deferred proxy (what the API hands out
until an application sets a provider) and its no-op one."""
if _trace is not None:
    _OFF = (_trace.ProxyTracerProvider, _trace.NoOpTracerProvider)


def available() -> bool:
    return _trace is not None


def on() -> bool:
    """Whether spans are recorded anywhere: the extra is installed and a tracer provider is set (checked on every
    span, so a provider set later, by an application or `configure`, is used from then on)."""
    return _trace is not None and not isinstance(_trace.get_tracer_provider(), _OFF)


def _clean(attributes: dict[str, Any]) -> Attributes:
    return {k if k.startswith("db.") else f"contextfold.{k}": v for k, v in attributes.items() if v is not None}


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[Any]:
    """A span around a block, current inside it (so what the block does is its children)."""
    if not on():
        yield _NOOP
        return
    with _trace.get_tracer(TRACER).start_as_current_span(name, attributes=_clean(attributes)) as current:
        yield current


def start(name: str, **attributes: Any) -> Any:
    """A span that is not made current (for a call whose end is seen elsewhere, such as a stream's last event);
    the caller ends it."""
    if not on():
        return _NOOP
    return _trace.get_tracer(TRACER).start_span(name, attributes=_clean(attributes))


def attach(current: Any) -> object | None:
    """Make `current` the current span until `detach` (a step's span over the work its turn does for it)."""
    if _trace is None or current is _NOOP:
        return None
    token: object = _context.attach(_trace.set_span_in_context(current))
    return token


def detach(token: object | None) -> None:
    if token is not None and _context is not None:
        with contextlib.suppress(ValueError):  # reset in another context (a generator closed elsewhere)
            _context.detach(token)


def set_attributes(target: Any, **attributes: Any) -> None:
    if target is not _NOOP:
        target.set_attributes(_clean(attributes))


def fail(target: Any, error: BaseException) -> None:
    """Mark a span failed with the exception."""
    if _trace is None or target is _NOOP:
        return
    target.record_exception(error)
    target.set_status(_trace.Status(_trace.StatusCode.ERROR, f"{type(error).__name__}: {error}"))


@contextlib.asynccontextmanager
async def store_call(backend: str, operation: str) -> AsyncIterator[None]:
    """One store round trip."""
    if not on():
        yield
        return
    with span("contextfold.store", **{"db.system": backend, "operation": operation}) as current:
        try:
            yield
        except Exception as exc:
            fail(current, exc)
            raise


def trace_id() -> str | None:
    """The current trace's id as 32 hex digits, or None outside a span (or without the extra)."""
    if _trace is None:
        return None
    context = _trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else None


class TraceIdFilter(logging.Filter):
    """Adds `trace_id` and `span_id` to a record made inside a span (a JSON log line then carries them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _trace is not None:
            context = _trace.get_current_span().get_span_context()
            if context.is_valid:
                record.trace_id = f"{context.trace_id:032x}"
                record.span_id = f"{context.span_id:016x}"
        return True


def configure(endpoint: str | None, *, service_name: str = "contextfold") -> bool:
    """Export spans with OTLP over HTTP to `endpoint` (None: leave the tracer provider as it is). Returns whether
    an exporter was set up. Raises `ConfigurationError` naming the extra when the packages are missing."""
    if not endpoint:
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise ConfigurationError(
            f"otel_endpoint is set to {endpoint!r} but OpenTelemetry is not installed ({exc}); install the extra: "
            "pip install 'contextfold[otel]'"
        ) from None
    assert _trace is not None
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    url = endpoint.rstrip("/")
    url = url if url.endswith("/v1/traces") else f"{url}/v1/traces"  # the collector's base URL, or the full path
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    _trace.set_tracer_provider(provider)
    return True
