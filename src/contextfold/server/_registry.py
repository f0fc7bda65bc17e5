"""Which `Model` answers a request's `model` name, with its summariser and its context window.

- `test` is always the built-in scripted model (`_testmodel.py`).
- A `[[models]]` route is matched by exact name and built with the adapters of `contextfold.models`; its provider
  (the SDK client) is built on first use and then shared by every turn.
- Any other name goes to `upstream` (an OpenAI-compatible Chat Completions server) when one is configured, all
  names over one shared client; without an upstream it is refused, naming the models there are.

The context window is the configured one, else what the upstream reports (vLLM's `max_model_len` on /v1/models,
asked once per model), else the model's profile; when none says, resolving fails with how to set it.

Each model has its compaction settings (the server's, overlaid by its route's `[models.compaction]`): its
summariser is itself (`self`), none (deterministic digests only), or another served model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .._errors import ConfigurationError, InvalidRequestError
from ..compaction import CompactionPolicy
from ..models import Model, ModelSettings, reports_context_window
from ..models._specs import SPECS, Route
from ._compaction import NONE, SELF, CompactionSettings
from ._config import TEST_MODEL, ModelRoute, ServerConfig
from ._testmodel import TEST_WINDOW, TestModel

MAX_UPSTREAM_MODELS = 256
"""Upstream models kept built at once (any name a client sends reaches the upstream: the oldest are let go)."""
RETRY_UNKNOWN_WINDOW = 60.0
"""Seconds before asking an upstream again for a window it did not report (it may have been down)."""


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    name: str
    model: Model
    """Shared: one instance (and one client) per model, used by every turn."""
    summariser: Model | None
    """None: deterministic compaction only."""
    context_window: int
    wire: str = "test"
    """The upstream's wire format (a route's provider; `openai-chat` for the upstream): the proxy passes its
    client's own parameters through only to an upstream of the client's wire."""
    auth: str = "server"
    """`forward`: the proxy sends its client's key with each request (see `ModelRoute.auth`)."""
    first_byte_timeout: float | None = None
    turn_timeout: float | None = None
    """The upstream's deadlines, in seconds (the route's own, else the server's)."""
    compaction: CompactionSettings = field(default_factory=CompactionSettings)

    @property
    def policy(self) -> CompactionPolicy:
        """The compaction policy in force for this model (a request may narrow it, see `_compaction`)."""
        return dataclasses.replace(self.compaction.policy(), summariser_input_tokens=self.summary_input())

    def summary_input(self) -> int:
        """How much of a folded span the summariser is shown: what fits its window beside the prompt, the previous
        summary and its answer (its window: the configured one, or the summariser's own when smaller), at most the
        policy's default. A summary request over the summariser's window would be refused and fall back to a
        digest."""
        own = self.summariser.profile.context_window if self.summariser is not None else None
        window = min(self.context_window, own or self.context_window)
        return max(1_000, min(CompactionPolicy().summariser_input_tokens, int(window * 0.6)))

    def summariser_for(self, deterministic: bool) -> Model | None:
        return None if deterministic else self.summariser

    def bounded(self, settings: ModelSettings) -> ModelSettings:
        """`settings` with this upstream's deadlines, the turn's counted from now: one turn gets one deadline,
        however many model calls (and retries) it makes."""
        deadline = None if self.turn_timeout is None else time.monotonic() + self.turn_timeout
        return dataclasses.replace(settings, first_byte_timeout=self.first_byte_timeout, deadline=deadline)

    def reserved_output(self, max_output_tokens: int | None) -> int:
        """The window kept for the answer: what the request or conversation asks for, else the model's output
        limit, at most a quarter of the window."""
        return max_output_tokens or min(self.model.profile.max_output_tokens or 4_096, self.context_window // 4)

    def budget(self, max_output_tokens: int | None) -> int:
        """The tokens the view may take: the window less the output reserved. Turns, compactions, the context
        report and the inspector's lines all use this one figure."""
        return self.context_window - self.reserved_output(max_output_tokens)


class _Provider(Protocol):
    async def aclose(self) -> None: ...


class ModelRegistry:
    """The models a server answers with, built on first use and closed with `close`."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._routes = {route.name: route for route in config.routes}
        self._test = TestModel(TEST_MODEL, context_window=config.context_window or TEST_WINDOW)
        self._built: dict[str, Model] = {}  # route name -> model
        self._upstream_models: OrderedDict[str, Model] = OrderedDict()
        self._providers: list[_Provider] = []
        self._upstream: Any = None  # the OpenAIProvider every upstream name shares
        self._windows: dict[str, tuple[int | None, float]] = {}  # name -> (reported window, when asked)
        self._locks: dict[str, asyncio.Lock] = {}

    def names(self) -> list[str]:
        """The models to list: the default first, then `test` and the routes (an upstream serves others too)."""
        return list(dict.fromkeys([self.config.model, TEST_MODEL, *self._routes]))

    async def resolve(self, name: str | None) -> ResolvedModel:
        """The model for a request's `model` (None: the default model)."""
        name = self.config.model if name is None else name
        if not name.strip():
            raise InvalidRequestError("model must be a model name, not an empty string", param="model")
        if name == TEST_MODEL:
            settings = self.config.compaction
            summariser = await self._summariser(settings, self._test)
            test_window = self._test.profile.context_window or TEST_WINDOW
            return ResolvedModel(name, self._test, summariser, test_window, compaction=settings)
        route = self._routes.get(name)
        if route is not None:
            model = self._built.get(name) or self._build_route(route)
            configured, wire, auth = route.context_window, route.provider, route.auth
        elif self.config.upstream is not None:
            model = self._upstream_model(name)
            configured, wire, auth = self.config.context_window, "openai-chat", self.config.upstream_auth
        else:
            raise InvalidRequestError(
                f"model {name!r} is not served here; available: {', '.join(self.names())}", param="model"
            )
        window = configured or await self._reported_window(name, model) or model.profile.context_window
        if window is None:
            how = (
                "context_window in its [[models]] route"
                if route is not None
                else "--context-window (or CONTEXTFOLD_CONTEXT_WINDOW, or context_window in the config file)"
            )
            raise ConfigurationError(
                f"the context window of model {name!r} is unknown: the upstream does not report it and its profile "
                f"does not say; set {how}"
            )
        options = route.options if route is not None else {}
        first_byte = float(options.get("first_byte_timeout", self.config.first_byte_timeout))
        turn = float(options.get("turn_timeout", self.config.turn_timeout))
        settings = self.config.compaction_for(route)
        summariser = await self._summariser(settings, model)
        return ResolvedModel(name, model, summariser, window, wire, auth, first_byte, turn, settings)

    async def _summariser(self, settings: CompactionSettings, model: Model) -> Model | None:
        """Who writes this model's summaries: itself, nobody (deterministic only), or another served model."""
        if settings.summariser == SELF:
            return model
        if settings.summariser == NONE:
            return None
        return (await self.resolve(settings.summariser)).model

    async def close(self) -> None:
        """Close every client the registry built."""
        providers, self._providers = self._providers, []
        self._built.clear()
        self._upstream_models.clear()
        self._upstream = None
        for provider in providers:
            await provider.aclose()

    # --- building ----------------------------------------------------------------------------------------------

    def _build_route(self, route: ModelRoute) -> Model:
        model = build_route(route, self._providers.append)
        self._built[route.name] = model
        return model

    def _upstream_model(self, name: str) -> Model:
        from ..models import OpenAIChatModel, OpenAIProvider

        model = self._upstream_models.get(name)
        if model is not None:
            self._upstream_models.move_to_end(name)
            return model
        if self._upstream is None:
            self._upstream = OpenAIProvider(
                api_key=self.config.upstream_api_key or "unused", base_url=self.config.upstream
            )
            self._providers.append(self._upstream)
        model = OpenAIChatModel(name, self._upstream)
        self._upstream_models[name] = model
        if len(self._upstream_models) > MAX_UPSTREAM_MODELS:
            dropped, _ = self._upstream_models.popitem(last=False)
            self._windows.pop(dropped, None)
            self._locks.pop(dropped, None)
        return model

    async def _reported_window(self, name: str, model: Model) -> int | None:
        """What the upstream reports for `name`, asked once (a report of none is asked again after a while)."""
        if not reports_context_window(model):
            return None
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:  # concurrent first requests ask once
            known = self._windows.get(name)
            if known is not None and (known[0] is not None or time.monotonic() - known[1] < RETRY_UNKNOWN_WINDOW):
                return known[0]
            try:
                window = await model.upstream_context_window()
            except Exception:  # a failure to ask is not fatal: the profile may know
                window = None
            self._windows[name] = (window, time.monotonic())
            return window


def build_route(route: ModelRoute, opened: Callable[[_Provider], None]) -> Model:
    """The model a route names, on a provider built for it (passed to `opened`, so that it gets closed); how is
    the provider's row in `models._specs.SPECS`."""
    spec = SPECS[route.provider]
    if spec.build is None:  # `test`: the scripted model, built here
        return TestModel(route.name, context_window=route.context_window)
    try:
        timeout = float(route.options.get("timeout", 600))
        key = route.api_key or _key_from_env(route)
        provider, model = spec.build(Route(key, route.base_url, timeout, route.options, route.upstream_model))
    except ImportError as exc:
        raise ConfigurationError(f"model {route.name!r} ({route.provider}) cannot be served: {exc}") from exc
    except ConfigurationError as exc:
        raise ConfigurationError(f"model {route.name!r} ({route.provider}) is not configured right: {exc}") from exc
    opened(provider)
    built: Model = model
    return built


def _key_from_env(route: ModelRoute) -> str | None:
    if route.api_key_env is None:
        return None
    key = os.environ.get(route.api_key_env)
    if not key:
        raise ConfigurationError(
            f"model {route.name!r} takes its API key from ${route.api_key_env}, which is not set; set it or give "
            "the route an api_key"
        )
    return key
