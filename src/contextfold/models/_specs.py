"""Provider knowledge in one place: one `ProviderSpec` row per provider a `[[models]]` route may name.

The server's config (the accepted names, each provider's options, which take no key and why, which can forward a
client's key), its registry (how a route's provider and model are built), `contextfold doctor` (whether and
where a route's models are listed) all read this table, so adding a provider means its adapter and one row here.

Adapters load on first use (`build`), so a row costs nothing until its provider is served.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

WireAPI = Literal["openai-chat", "openai-responses", "anthropic", "gemini", "cohere", "bedrock", "test"]


@dataclass(frozen=True, slots=True)
class Route:
    """What a route gives its provider's builder: the key, base URL, timeout, options and the upstream's name."""

    api_key: str | None
    base_url: str | None
    timeout: float
    options: Mapping[str, str]
    upstream_model: str


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    name: str
    """What a route's `provider` says."""
    wire: WireAPI
    """The wire API its requests speak (also the grammar the adapter checks its payload against)."""
    build: Callable[[Route], tuple[Any, Any]] | None
    """(provider, model) for a route; None for `test`, which the server builds itself."""
    options: tuple[str, ...] = ()
    """Route options of this provider, beside the timeouts every provider takes."""
    keyless: str | None = None
    """Why a route of this provider takes no api_key (None: it takes one)."""
    forwardable: bool = False
    """Whether its adapter can send a client's own key per request (`auth = "forward"`)."""
    listing: str | None = None
    """The path of its models listing, relative to the SDK client's base URL, for `doctor` (None: not probed)."""


def _openai(route: Route) -> Any:
    from ._openai import OpenAIProvider

    return OpenAIProvider(api_key=route.api_key, base_url=route.base_url, timeout=route.timeout)


def _openai_chat(route: Route) -> tuple[Any, Any]:
    from ._openai_chat import OpenAIChatModel

    provider = _openai(route)
    return provider, OpenAIChatModel(route.upstream_model, provider)


def _openai_responses(route: Route) -> tuple[Any, Any]:
    from ._openai_responses import OpenAIResponsesModel

    provider = _openai(route)
    return provider, OpenAIResponsesModel(route.upstream_model, provider)


def _azure(route: Route) -> tuple[Any, Any]:
    from ._openai import AzureProvider
    from ._openai_chat import OpenAIChatModel

    options = route.options
    version = {"api_version": options["api_version"]} if "api_version" in options else {}
    provider = AzureProvider(
        options.get("resource"),
        deployment=options.get("deployment", route.upstream_model),
        api_key=route.api_key,
        endpoint=route.base_url,
        timeout=route.timeout,
        **version,
    )
    return provider, OpenAIChatModel(route.upstream_model, provider)


def _anthropic(route: Route) -> tuple[Any, Any]:
    from . import AnthropicModel, AnthropicProvider  # the package names the extra when its SDK is missing

    provider = AnthropicProvider(api_key=route.api_key, base_url=route.base_url, timeout=route.timeout)
    return provider, AnthropicModel(route.upstream_model, provider)


def _gemini(route: Route) -> tuple[Any, Any]:
    from . import GeminiModel, GeminiProvider

    provider = GeminiProvider(api_key=route.api_key, base_url=route.base_url, timeout=route.timeout)
    return provider, GeminiModel(route.upstream_model, provider)


def _cohere(route: Route) -> tuple[Any, Any]:
    from . import CohereModel, CohereProvider

    provider = CohereProvider(api_key=route.api_key, base_url=route.base_url, timeout=route.timeout)
    return provider, CohereModel(route.upstream_model, provider)


def _bedrock(route: Route) -> tuple[Any, Any]:
    from . import BedrockModel, BedrockProvider

    provider = BedrockProvider(route.options.get("region"), endpoint_url=route.base_url, read_timeout=route.timeout)
    return provider, BedrockModel(route.upstream_model, provider)


_ROWS = (
    ProviderSpec("openai-chat", "openai-chat", _openai_chat, forwardable=True, listing="models"),
    ProviderSpec("openai-responses", "openai-responses", _openai_responses, forwardable=True, listing="models"),
    ProviderSpec("azure", "openai-chat", _azure, options=("deployment", "api_version", "resource")),
    ProviderSpec("anthropic", "anthropic", _anthropic, forwardable=True, listing="v1/models"),
    ProviderSpec("gemini", "gemini", _gemini),
    ProviderSpec("cohere", "cohere", _cohere),
    ProviderSpec(
        "bedrock",
        "bedrock",
        _bedrock,
        options=("region",),
        keyless="bedrock signs with the AWS credentials of the environment",
    ),
    ProviderSpec("test", "test", None, keyless="it needs none"),
)

SPECS: Mapping[str, ProviderSpec] = MappingProxyType({spec.name: spec for spec in _ROWS})
"""Every provider a route may name, by name, in the order the docs list them."""
