"""Running the server: logging, the tenancy safety check, the start-up banner, and uvicorn.

`run` opens nothing for the app itself: `create_app` builds it, and the app opens (and migrates) the store and
closes everything in its lifespan. What `run` does decide is whether the server may start: with no active API key
in the store, every request is accepted as tenant "default", so the server must listen on loopback only.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

from .. import __version__
from .. import _tracing as tracing
from .._errors import ConfigurationError
from ._config import ServerConfig
from ._registry import ModelRegistry

NO_KEYS = "no API keys configured: accepting unauthenticated requests on loopback only"
NEEDS_KEYS = "create a key with `contextfold keys create --tenant NAME` or bind to 127.0.0.1"


def run(config: ServerConfig, *, out: TextIO | None = None) -> None:
    """Serve until SIGINT or SIGTERM (both end it cleanly). Raises `ConfigurationError` when it must not start."""
    keys = asyncio.run(active_keys(config.db))
    check_exposure(config, keys)
    tracing.configure(config.otel_endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    configure_logging(config.log_format, config.log_level)
    print(banner(config, keys), file=out or sys.stderr, flush=True)

    import uvicorn

    from .edge._http import protocol

    app = _create_app(config)
    settings = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        http=protocol(config.limits.max_header_bytes),
        log_config=None,
        access_log=False,
        lifespan="on",
        # past the grace period, uvicorn cancels the requests still running: their turns are marked interrupted
        timeout_graceful_shutdown=math.ceil(config.shutdown_grace),
    )
    _settle_heap()
    with _sigterm_ends_cleanly():
        try:
            uvicorn.Server(settings).run()
        except (KeyboardInterrupt, _Stop):
            # uvicorn shuts down gracefully on the signal, then raises it again for the caller: done.
            return


def _create_app(config: ServerConfig) -> Any:
    from .. import server  # looked up when called, so that a test can replace it

    return server.create_app(config)


async def active_keys(db: str) -> int:
    """How many active API keys the store at `db` holds (opening it migrates it, as the app would)."""
    from ..store import open_server_store

    store = await open_server_store(db)
    try:
        return await store.keys.active()
    finally:
        await store.close()


def _settle_heap() -> None:
    """Move what start-up made (modules, the SDKs' models, the app) out of the collector's reach: the objects are
    there for the process's life, and every full collection walked them all again (the longest pause in 1,000 proxy
    requests 72-80 ms before, 56-62 ms after: a stall of whatever request was running). The process serves only
    the app, so this is its call, not `create_app`'s (an application embedding the app keeps its own settings)."""
    gc.collect()
    gc.freeze()


def check_exposure(config: ServerConfig, active_keys: int) -> None:
    """Refuse to accept unauthenticated requests from beyond this machine."""
    if active_keys == 0 and not is_loopback(config.host):
        raise ConfigurationError(
            f"refusing to listen on {config.host}: there are no API keys, so anyone who can reach the server could "
            f"use it; {NEEDS_KEYS}"
        )


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def banner(config: ServerConfig, active_keys: int) -> str:
    host = f"[{config.host}]" if ":" in config.host else config.host
    models = ModelRegistry(config).names()  # building a registry opens nothing
    listed = ", ".join(f"{name} (default)" if name == config.model else name for name in models)
    if config.upstream:
        listed += f"; any other name goes to {config.upstream}"
    auth = f"API keys required ({active_keys} active)" if active_keys else NO_KEYS
    rows = [
        ("url", f"http://{host}:{config.port}/v1"),
        ("database", redact(config.db)),
        ("models", listed),
        ("auth", auth),
    ]
    return "\n".join([f"contextfold {__version__} server", *(f"  {k:<9}{v}" for k, v in rows)])


def redact(location: str) -> str:
    """A database location fit to print: a URL's password is hidden."""
    parts = urlsplit(location)
    if parts.scheme and parts.password:
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return location


# --- logging -------------------------------------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any `extra` fields of the record."""

    _STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in self._STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(log_format: str, level: str) -> None:
    """Everything (the server's loggers and uvicorn's) to stderr, as text or JSON lines, at `level`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(tracing.TraceIdFilter())  # each record names the trace it belongs to (empty outside one)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []  # propagate to the root handler, formatted alike
        logging.getLogger(name).propagate = True


class _Stop(Exception):
    """Raised by the SIGTERM handler uvicorn re-raises the signal into after its graceful shutdown."""


@contextmanager
def _sigterm_ends_cleanly() -> Iterator[None]:
    """SIGTERM (what a container stop sends) ends `run` like SIGINT, instead of killing the process."""

    def stop(signum: int, frame: object) -> None:
        raise _Stop

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: uvicorn does not handle signals there either
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
