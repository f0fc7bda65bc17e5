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

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_args

from .._errors import ConfigurationError

Provider = Literal["openai-chat", "openai-responses", "azure", "anthropic", "gemini", "cohere", "bedrock", "test"]
PROVIDERS: tuple[str, ...] = get_args(Provider)
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
    api_key: str | None = None
    api_key_env: str | None = None
    """The environment variable holding the key, read when the route is first used (keeps secrets out of files)."""
    context_window: int | None = None
    options: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Provider-specific: azure `deployment`, `api_version`, `resource`; bedrock `region`; any: `timeout` (s)."""

    @property
    def upstream_model(self) -> str:
        return self.model or self.name


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-request size limits; a request over one is refused with 413 naming the limit."""

    max_body_bytes: int = 8 * 1024 * 1024
    max_items_per_request: int = 1_000
    max_tool_output_bytes: int = 1 * 1024 * 1024
    max_instructions_bytes: int = 256 * 1024


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything `contextfold serve` needs. Build it with `load_config`, which validates every field."""

    host: str = "127.0.0.1"
    port: int = 8400
    db: str = "contextfold.db"
    """A SQLite file path or a postgresql:// URL."""
    upstream: str | None = None
    """An OpenAI-compatible base URL (Chat Completions): any model name without a route goes there."""
    upstream_api_key: str | None = None
    model: str = TEST_MODEL
    """The model of a request that names none."""
    context_window: int | None = None
    """The window of the `test` model and of the upstream's models (a route sets its own)."""
    queue_turns: bool = False
    """Wait for a busy conversation's turn to end instead of answering 409."""
    compact_threshold: float = 0.8
    compact_target: float = 0.5
    limits: Limits = Limits()
    routes: tuple[ModelRoute, ...] = ()
    log_format: Literal["text", "json"] = "text"
    log_level: str = "info"
    lease_ttl: float = 30.0
    """Seconds a turn lease lasts without renewal (a crashed replica's turn is free again after this)."""


