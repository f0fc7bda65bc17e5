"""The server's configuration: one frozen `ServerConfig`, read from flags, environment and a TOML file.

Precedence, highest first: command-line flags, `CONTEXTFOLD_*` environment variables, the config file (named by
`--config` or `CONTEXTFOLD_CONFIG`), the defaults. Every value is checked once, here, and a bad one raises
`ConfigurationError` naming the key, where it came from (`--port`, `CONTEXTFOLD_PORT`, `server.toml:port`) and
what is accepted, so a typo is caught at start-up rather than at the first request.

The file holds the top-level fields as scalar keys, a `[limits]` table and one `[[models]]` table per served model:

    port = 8400
    db = "postgresql://contextfold@db/contextfold"
    [limits]
    max_body_bytes = 4194304
    [[models]]
    name = "claude"
    provider = "anthropic"
    model = "claude-sonnet-4-5"
    api_key_env = "ANTHROPIC_API_KEY"
"""

from __future__ import annotations

import contextlib
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from .._errors import ConfigurationError
from ..models._specs import SPECS
from ._compaction import NONE, SELF, CompactionSettings
from .responses._guardrails_config import GuardrailSpec, check_references, parse_guardrails

Provider = str
"""A provider's name: one of `PROVIDERS`, the rows of `models._specs.SPECS` (its one source)."""
PROVIDERS: tuple[str, ...] = tuple(SPECS)
Auth = Literal["server", "forward"]
AUTH_MODES: tuple[str, ...] = get_args(Auth)
FORWARDABLE = tuple(name for name, spec in SPECS.items() if spec.forwardable)
"""Providers whose adapters can send a per-request key (a bearer token or `x-api-key`)."""
TEST_MODEL = "test"
"""The built-in scripted model's name: always served, so no route may take it."""


@dataclass(frozen=True, slots=True)
class ModelRoute:
    """A model name clients may ask for, and where it goes."""

    name: str
    provider: Provider
    model: str | None = None
    """The upstream's name for the model, when it differs from `name`."""
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)  # kept out of logs and tracebacks
    api_key_env: str | None = None
    """The environment variable holding the key, read when the route is first used (keeps secrets out of files)."""
    context_window: int | None = None
    options: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Provider-specific: azure `deployment`, `api_version`, `resource`; bedrock `region`; any: `timeout` (s, the
    SDK's per-read timeout), `first_byte_timeout` and `turn_timeout` (s, this route's own deadlines)."""
    compaction: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    """This model's own compaction settings (a `[models.compaction]` table, keys as the `compact_*` ones without
    the prefix), over the server's."""
    auth: Auth = "server"
    """`server`: the route's own key goes upstream. `forward`: the proxy routes forward their client's key (its
    `Authorization` or `x-api-key`) to this upstream, and to no other."""
    guardrails: tuple[str, ...] = ()
    """Names of `[[guardrails]]` every response of this model is checked by (see `_guardrails_config`)."""

    @property
    def upstream_model(self) -> str:
        return self.model or self.name


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-request size limits; a request over one is refused with 413 naming the limit (431 for the headers)."""

    max_body_bytes: int = 8 * 1024 * 1024
    max_items_per_request: int = 1_000
    max_tool_output_bytes: int = 1 * 1024 * 1024
    max_instructions_bytes: int = 256 * 1024
    max_header_bytes: int = 64 * 1024
    """The request line and headers together, counted as they arrive (before the parser holds them whole)."""
    max_file_bytes: int = 32 * 1024 * 1024
    """One uploaded file (`POST /v1/files`); the upload's body may exceed `max_body_bytes` by this much."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything `contextfold serve` needs. Build it with `load_config`, which validates every field."""

    host: str = "127.0.0.1"
    port: int = 8400
    db: str = "contextfold.db"
    """A SQLite file path or a postgresql:// URL."""
    upstream: str | None = None
    """An OpenAI-compatible base URL (Chat Completions): any model name without a route goes there."""
    upstream_api_key: str | None = field(default=None, repr=False)  # kept out of logs and tracebacks
    upstream_auth: Auth = "server"
    """As a route's `auth`, for the upstream."""
    model: str = TEST_MODEL
    """The model of a request that names none."""
    context_window: int | None = None
    """The window of the `test` model and of the upstream's models (a route sets its own)."""
    queue_turns: bool = False
    """Wait for a busy conversation's turn to end instead of answering 409."""
    compact_threshold: float = 0.8
    compact_target: float = 0.5
    compact_tail_turns: int = 4
    compact_head_items: int = 2
    compact_masking: bool = True
    compact_background: bool = True
    """Compact off the request path once an answer leaves the view between the soft threshold and the trigger
    (false: only inline, when a request passes the trigger)."""
    compact_summariser: str = SELF
    """`self` (each model summarises its own conversations), `none` (deterministic only) or a served model name."""
    compact_summariser_timeout: float = 120.0
    compact_summary_max_tokens: int = 0
    """The summary's output cap in tokens; 0: the policy's share of the budget."""
    limits: Limits = Limits()
    routes: tuple[ModelRoute, ...] = ()
    log_format: Literal["text", "json"] = "text"
    log_level: str = "info"
    lease_ttl: float = 30.0
    """Seconds a turn lease lasts without renewal (a crashed replica's turn is free again after this)."""
    first_byte_timeout: float = 120.0
    """Seconds an upstream may take to send the first chunk of an answer, per attempt (a route may set its own)."""
    turn_timeout: float = 600.0
    """Seconds a turn may wait on its upstream in all, retries included; then it fails and the conversation is
    free (a route may set its own)."""
    shutdown_grace: float = 10.0
    """Seconds SIGTERM or SIGINT waits for running requests before cancelling them (their turns are marked)."""
    max_replay_bytes: int = 64 * 1024 * 1024
    """Memory kept for resuming streams (encoded events); the oldest finished streams are let go first."""
    guardrails: tuple[GuardrailSpec, ...] = ()
    """The `[[guardrails]]` tables: checks models and requests can name."""

    tool_timeout: float = 60.0
    """Seconds one call of a server-side tool (recall, expand, file_search, MCP) may take before its result is an
    error the model reads."""
    mcp_timeout: float = 30.0
    """Seconds for one call of a remote MCP tool, connection included (a listing gets at most 10)."""

    embeddings_url: str | None = None
    """An OpenAI-compatible base URL (`.../v1`) whose `POST /embeddings` embeds vector store chunks and search
    queries; unset, file search ranks by full text only."""
    embeddings_model: str | None = None
    """The model `embeddings_url` is asked for (needed with it)."""
    embeddings_api_key: str | None = field(default=None, repr=False)  # kept out of logs and tracebacks

    otel_endpoint: str | None = None
    """An OTLP/HTTP endpoint (`http://collector:4318`) to export traces to; needs the `otel` extra."""

    @property
    def compaction(self) -> CompactionSettings:
        """The server-wide compaction settings (a route's `compaction` table overlays them)."""
        return CompactionSettings(
            threshold=self.compact_threshold,
            target=self.compact_target,
            tail_turns=self.compact_tail_turns,
            head_items=self.compact_head_items,
            masking=self.compact_masking,
            summariser=self.compact_summariser,
            summariser_timeout=self.compact_summariser_timeout,
            summary_max_tokens=self.compact_summary_max_tokens or None,
        )

    def compaction_for(self, route: ModelRoute | None) -> CompactionSettings:
        return self.compaction.overlay(dict(route.compaction)) if route is not None else self.compaction


ENV_PREFIX = "CONTEXTFOLD_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_TOP = tuple(f.name for f in fields(ServerConfig) if f.name not in ("limits", "routes", "guardrails"))
_LIMITS = tuple(f.name for f in fields(Limits))
_ROUTE_KEYS = tuple(f.name for f in fields(ModelRoute))
_TIMEOUTS = ("timeout", "first_byte_timeout", "turn_timeout")  # route options any provider takes, in seconds


def load_config(
    args: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
) -> ServerConfig:
    """The configuration from `args` (flag values by field name, None meaning not given), `env` (default
    `os.environ`) and the TOML file (`config_file`, else `args["config"]`, else `$CONTEXTFOLD_CONFIG`).

    `args` may also carry the `Limits` fields. An empty environment variable counts as unset.
    """
    given = dict(args or {})
    env = os.environ if env is None else env
    path_arg = given.pop("config", None)
    unknown = sorted(set(given) - set(_TOP) - set(_LIMITS))
    if unknown:
        raise ConfigurationError(
            f"unknown configuration argument(s) {', '.join(unknown)}; known: {', '.join(_TOP + _LIMITS)}"
        )

    raw: dict[str, tuple[object, str]] = {}
    routes: tuple[ModelRoute, ...] = ()
    guardrails: tuple[GuardrailSpec, ...] = ()
    for path, origin in ((config_file, "config_file"), (path_arg, "--config"), (env.get(CONFIG_ENV), CONFIG_ENV)):
        if path:
            document = _read_file(Path(str(path)), origin)
            raw.update(_file_values(document, str(path)))
            routes = _routes(document.get("models", []), str(path))
            guardrails = parse_guardrails(document.get("guardrails", []), str(path))
            check_references(guardrails, {r.name: r.guardrails for r in routes})
            break
    for key in (*_TOP, *_LIMITS):
        name = ENV_PREFIX + key.upper()
        if env.get(name):
            raw[key] = (env[name], name)
    for key, value in given.items():
        if value is not None:
            raw[key] = (value, "--" + key.replace("_", "-"))

    values = {key: _PARSERS.get(key, _positive_int)(key, value, origin) for key, (value, origin) in raw.items()}
    limits = Limits(**{key: values.pop(key) for key in _LIMITS if key in values})
    config = ServerConfig(**values, limits=limits, routes=routes, guardrails=guardrails)
    _check_together(config, {key: origin for key, (_, origin) in raw.items()})
    return config


def _read_file(path: Path, origin: str) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigurationError(f"config file {str(path)!r} (from {origin}) does not exist") from None
    except OSError as exc:
        raise ConfigurationError(f"config file {str(path)!r} (from {origin}) cannot be read: {exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"config file {str(path)!r} is not valid TOML: {exc}") from None


def _file_values(document: Mapping[str, Any], file: str) -> dict[str, tuple[object, str]]:
    out: dict[str, tuple[object, str]] = {}
    for key, value in document.items():
        if key in ("models", "guardrails"):
            continue
        if key == "limits":
            if not isinstance(value, Mapping):
                raise ConfigurationError(f"{file}:limits must be a [limits] table, got {value!r}")
            for limit, amount in value.items():
                if limit not in _LIMITS:
                    raise ConfigurationError(f"unknown key {file}:limits.{limit}; known: {', '.join(_LIMITS)}")
                out[limit] = (amount, f"{file}:limits.{limit}")
        elif key in _TOP:
            out[key] = (value, f"{file}:{key}")
        else:
            raise ConfigurationError(
                f"unknown key {file}:{key}; known: {', '.join(_TOP)}, a [limits] table and [[models]] tables"
            )
    return out


def _check_together(config: ServerConfig, origins: Mapping[str, str]) -> None:
    """The checks that involve more than one value."""
    if not config.compact_target < config.compact_threshold:
        raise ConfigurationError(
            f"compact_target {config.compact_target} (from {origins.get('compact_target', 'the default')}) must be "
            f"below compact_threshold {config.compact_threshold} (from "
            f"{origins.get('compact_threshold', 'the default')}): the gap between them is what keeps compactions rare"
        )
    if (config.embeddings_url is None) != (config.embeddings_model is None):
        raise ConfigurationError(
            "embeddings_url and embeddings_model go together: set both (--embeddings-url http://host/v1 "
            "--embeddings-model NAME) to embed vector store chunks, or neither for full-text search only"
        )
    names = [route.name for route in config.routes]
    for route in (None, *config.routes):
        settings = config.compaction_for(route)
        where = "the server" if route is None else f"model {route.name!r}"
        if not settings.target < settings.threshold:
            raise ConfigurationError(
                f"the compaction target {settings.target} of {where} must be below its threshold "
                f"{settings.threshold}: the gap between them is what keeps compactions rare"
            )
        if settings.summariser not in (SELF, NONE, TEST_MODEL, *names) and config.upstream is None:
            raise ConfigurationError(
                f"the summariser {settings.summariser!r} of {where} is not served: use self, none, or one of "
                f"{', '.join([TEST_MODEL, *names])}"
            )
    if config.model != TEST_MODEL and config.model not in names and config.upstream is None:
        raise ConfigurationError(
            f"the default model {config.model!r} (from {origins.get('model', 'the default')}) is not served: "
            f"the models are {', '.join([TEST_MODEL, *names])} and there is no upstream; add a [[models]] route "
            "named so, or set --upstream"
        )


# --- values --------------------------------------------------------------------------------------------------------


def _fail(key: str, value: object, origin: str, accepted: str) -> ConfigurationError:
    return ConfigurationError(f"{key} must be {accepted}, got {value!r} (from {origin})")


def _text(key: str, value: object, origin: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(key, value, origin, "a non-empty string")
    return value.strip()


def _name(key: str, value: object, origin: str) -> str:
    text = _text(key, value, origin)
    if any(c.isspace() for c in text):
        raise _fail(key, value, origin, "a model name without spaces")
    return text


def _url(key: str, value: object, origin: str) -> str:
    text = _text(key, value, origin)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _fail(key, value, origin, "an http:// or https:// URL, such as http://localhost:8000/v1")
    return text


def _int(key: str, value: object, origin: str, low: int, high: int | None, accepted: str) -> int:
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        number = int(value)
    if number is None or number < low or (high is not None and number > high):
        raise _fail(key, value, origin, accepted)
    return number


def _positive_int(key: str, value: object, origin: str) -> int:
    return _int(key, value, origin, 1, None, "a positive integer")


def _port(key: str, value: object, origin: str) -> int:
    return _int(key, value, origin, 1, 65_535, "an integer from 1 to 65535")


def _float(key: str, value: object, origin: str, ok: Callable[[float], bool], accepted: str) -> float:
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = float(value)
    if number is None or not math.isfinite(number) or not ok(number):
        raise _fail(key, value, origin, accepted)
    return number


def _threshold(key: str, value: object, origin: str) -> float:
    return _float(key, value, origin, lambda x: 0 < x <= 1, "a fraction of the budget above 0 and at most 1")


def _target(key: str, value: object, origin: str) -> float:
    return _float(key, value, origin, lambda x: 0 < x < 1, "a fraction of the budget between 0 and 1")


def _seconds(key: str, value: object, origin: str) -> float:
    return _float(key, value, origin, lambda x: x > 0, "a positive number of seconds")


def _bool(key: str, value: object, origin: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.strip().lower() in ("1", "true", "yes", "on")
    raise _fail(key, value, origin, "true or false (1/0, yes/no, on/off)")


def _choice(*accepted: str) -> Callable[[str, object, str], str]:
    def parse(key: str, value: object, origin: str) -> str:
        if isinstance(value, str) and value.strip().lower() in accepted:
            return value.strip().lower()
        raise _fail(key, value, origin, "one of " + ", ".join(accepted))

    return parse


_PARSERS: dict[str, Callable[[str, object, str], Any]] = {
    "host": _text,
    "port": _port,
    "db": _text,
    "upstream": _url,
    "upstream_api_key": _text,
    "upstream_auth": _choice(*AUTH_MODES),
    "model": _name,
    "context_window": _positive_int,
    "queue_turns": _bool,
    "compact_threshold": _threshold,
    "compact_target": _target,
    "log_format": _choice("text", "json"),
    "log_level": _choice(*LOG_LEVELS),
    "lease_ttl": _seconds,
    "first_byte_timeout": _seconds,
    "turn_timeout": _seconds,
    "shutdown_grace": _seconds,
    "mcp_timeout": _seconds,
    "tool_timeout": _seconds,
    "compact_tail_turns": _positive_int,
    "compact_head_items": lambda key, value, origin: _int(key, value, origin, 0, None, "a whole number, 0 or more"),
    "compact_masking": _bool,
    "compact_background": _bool,
    "compact_summariser": _name,
    "compact_summariser_timeout": _seconds,
    "compact_summary_max_tokens": lambda key, value, origin: _int(key, value, origin, 0, None, "0 (no cap) or more"),
    "otel_endpoint": _url,
    "embeddings_url": _url,
    "embeddings_model": _name,
    "embeddings_api_key": _text,
}  # the Limits fields (and max_replay_bytes) are positive integers


# --- routes --------------------------------------------------------------------------------------------------------


def _routes(tables: object, file: str) -> tuple[ModelRoute, ...]:
    if not isinstance(tables, list) or not all(isinstance(t, Mapping) for t in tables):
        raise ConfigurationError(f"{file}:models must be [[models]] tables, one per model, got {tables!r}")
    routes: list[ModelRoute] = []
    for index, table in enumerate(tables):
        route = _route(table, f"{file}:models[{index}]")
        if route.name in (TEST_MODEL, *(r.name for r in routes)):
            why = "is reserved for the built-in test model" if route.name == TEST_MODEL else "is taken by another route"
            raise ConfigurationError(f"{file}:models[{index}].name {route.name!r} {why}; pick another name")
        routes.append(route)
    return tuple(routes)


def _route(table: Mapping[str, Any], where: str) -> ModelRoute:
    unknown = sorted(set(table) - set(_ROUTE_KEYS))
    if unknown:
        raise ConfigurationError(f"unknown key(s) {', '.join(unknown)} in {where}; known: {', '.join(_ROUTE_KEYS)}")
    for required in ("name", "provider"):
        if required not in table:
            raise ConfigurationError(f"{where} has no {required!r}; every [[models]] table needs a name and a provider")
    provider = table["provider"]
    if provider not in PROVIDERS:
        raise _fail("provider", provider, f"{where}.provider", "one of " + ", ".join(PROVIDERS))
    parsers: dict[str, Callable[[str, object, str], Any]] = {
        "name": _name,
        "model": _text,
        "base_url": _url,
        "api_key": _text,
        "api_key_env": _text,
        "context_window": _positive_int,
        "auth": _choice(*AUTH_MODES),
        "guardrails": _names,
    }
    values = {key: parsers[key](key, table[key], f"{where}.{key}") for key in parsers if key in table}
    options = _route_options(table.get("options", {}), provider, where)
    compaction = _route_compaction(table.get("compaction", {}), where)
    route = ModelRoute(provider=provider, options=options, compaction=compaction, **values)
    label = f"{where} ({route.name!r}, provider {provider})"
    if route.api_key and route.api_key_env:
        raise ConfigurationError(f"{label} sets both api_key and api_key_env; keep one")
    why = SPECS[provider].keyless
    if why is not None and (route.api_key or route.api_key_env):
        raise ConfigurationError(f"{label} takes no api_key: {why}")
    if route.auth == "forward" and provider not in FORWARDABLE:
        raise ConfigurationError(
            f'{label} cannot forward its clients\' keys (auth = "forward"): only {", ".join(FORWARDABLE)} routes can'
        )
    if provider == "test" and route.base_url:
        raise ConfigurationError(f"{label} takes no base_url: the test model runs in the server")
    if provider == "azure" and not (route.base_url or "resource" in options):
        raise ConfigurationError(
            f'{label} needs its endpoint: set base_url = "https://NAME.openai.azure.com" or options.resource'
        )
    return route


def _names(key: str, value: object, origin: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _fail(key, value, origin, "a list of [[guardrails]] names")
    return tuple(value)


def _route_options(value: object, provider: str, where: str) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{where}.options must be a table of strings, got {value!r}")
    accepted = (*_TIMEOUTS, *SPECS[provider].options)
    options: dict[str, str] = {}
    for key, item in value.items():
        if key not in accepted:
            raise ConfigurationError(
                f"unknown option {where}.options.{key} for provider {provider}; accepted: {', '.join(accepted)}"
            )
        if key in _TIMEOUTS:
            item = str(_seconds(key, item, f"{where}.options.{key}"))
        options[key] = _text(key, item if not isinstance(item, (int, float)) else str(item), f"{where}.options.{key}")
    return MappingProxyType(options)


def _route_compaction(value: object, where: str) -> Mapping[str, Any]:
    """A `[models.compaction]` table: the `compact_*` keys without the prefix, checked as the server's are."""
    keys = [key.removeprefix("compact_") for key in _PARSERS if key.startswith("compact_")]
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{where}.compaction must be a table ([models.compaction]), got {value!r}")
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key not in keys:
            raise ConfigurationError(f"unknown key {where}.compaction.{key}; known: {', '.join(keys)}")
        out[key] = _PARSERS["compact_" + key](key, item, f"{where}.compaction.{key}")
    if out.get("summary_max_tokens") == 0:
        out["summary_max_tokens"] = None
    return MappingProxyType(out)
