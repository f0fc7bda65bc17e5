"""The model registry: `test` built in, routes by exact name on their adapters, any other name to the upstream (one
shared client), and the context window from configuration, the upstream's /v1/models, or the profile."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from contextfold import ConfigurationError, InvalidRequestError
from contextfold.models import ModelSettings
from contextfold.models._openai_chat import OpenAIChatModel
from contextfold.models._openai_responses import OpenAIResponsesModel
from contextfold.server._config import ModelRoute, ServerConfig
from contextfold.server._registry import ModelRegistry
from contextfold.server._testmodel import TestModel

from .fakes._server import AnyReply, FakeServer, Reply, Request
from .fakes.fake_openai import ask, chat_answer, models_list

Factory = Callable[..., ModelRegistry]


@pytest.fixture
async def make() -> AsyncIterator[Factory]:
    """Registries built by the test, all closed at its end."""
    made: list[ModelRegistry] = []

    def build(**fields: Any) -> ModelRegistry:
        registry = ModelRegistry(ServerConfig(**fields))
        made.append(registry)
        return registry

    yield build
    for registry in made:
        await registry.close()


def vllm(server: FakeServer, *entries: dict[str, Any]) -> None:
    """The fake answers /v1/models with `entries` and every chat request with a short answer."""

    def handle(request: Request) -> AnyReply:
        if request.method == "GET" and request.path == "/v1/models":
            return models_list(*entries)
        return chat_answer("hello from upstream")

    server.handler = handle


def models_requests(server: FakeServer) -> int:
    return sum(1 for r in server.requests if r.path == "/v1/models")


async def test_test_is_built_in_and_the_default(make: Factory) -> None:
    registry = make()
    resolved = await registry.resolve(None)
    assert resolved.name == "test"
    assert isinstance(resolved.model, TestModel)
    assert resolved.summariser is resolved.model
    assert resolved.context_window == 16_384
    assert (await registry.resolve("test")).model is resolved.model
    assert (await make(context_window=8_000).resolve("test")).context_window == 8_000


async def test_an_unknown_name_without_upstream_is_refused_with_what_is_served(make: Factory) -> None:
    registry = make(routes=(ModelRoute("demo", "test"),))
    with pytest.raises(InvalidRequestError) as caught:
        await registry.resolve("gpt-4o")
    assert caught.value.param == "model"
    assert str(caught.value) == "model 'gpt-4o' is not served here; available: test, demo"
    with pytest.raises(InvalidRequestError, match="not an empty string"):
        await registry.resolve(" ")


def test_names_lists_the_default_first() -> None:
    routes = (ModelRoute("demo", "test"), ModelRoute("claude", "anthropic", api_key="k"))
    assert ModelRegistry(ServerConfig(routes=routes)).names() == ["test", "demo", "claude"]
    assert ModelRegistry(ServerConfig(model="claude", routes=routes)).names() == ["claude", "test", "demo"]
    upstream = ServerConfig(model="qwen", upstream="http://localhost:1/v1")
    assert ModelRegistry(upstream).names() == ["qwen", "test"]


async def test_a_test_route_serves_the_test_model_under_its_name(make: Factory) -> None:
    resolved = await make(routes=(ModelRoute("small", "test", context_window=2_048),)).resolve("small")
    assert isinstance(resolved.model, TestModel)
    assert (resolved.model.name, resolved.context_window) == ("small", 2_048)


async def test_upstream_names_share_one_client_and_detect_their_window_once(make: Factory, server: FakeServer) -> None:
    vllm(server, {"id": "qwen", "max_model_len": 32_768}, {"id": "llama", "max_model_len": 8_192})
    registry = make(upstream=server.url + "/v1", model="qwen")
    qwen = await registry.resolve(None)
    assert (qwen.name, qwen.context_window) == ("qwen", 32_768)
    assert isinstance(qwen.model, OpenAIChatModel)
    assert (await registry.resolve("qwen")).model is qwen.model
    assert models_requests(server) == 1  # asked once, then remembered
    llama = await registry.resolve("llama")
    assert llama.context_window == 8_192
    assert isinstance(llama.model, OpenAIChatModel)
    assert llama.model.provider is qwen.model.provider  # one client for every upstream name
    response = await qwen.model.request(ask("hi"), ModelSettings())
    assert response.text == "hello from upstream"
    sent = server.requests[-1]
    assert sent.json["model"] == "qwen"
    assert sent.headers["authorization"] == "Bearer unused"


async def test_concurrent_first_requests_ask_the_upstream_once(make: Factory, server: FakeServer) -> None:
    vllm(server, {"id": "qwen", "max_model_len": 4_096})
    registry = make(upstream=server.url + "/v1")
    resolved = await asyncio.gather(*(registry.resolve("qwen") for _ in range(8)))
    assert {r.context_window for r in resolved} == {4_096}
    assert len({id(r.model) for r in resolved}) == 1
    assert models_requests(server) == 1


async def test_a_configured_window_wins_and_the_upstream_is_not_asked(make: Factory, server: FakeServer) -> None:
    vllm(server, {"id": "qwen", "max_model_len": 32_768})
    registry = make(upstream=server.url + "/v1", upstream_api_key="sk-up", context_window=10_000)
    assert (await registry.resolve("qwen")).context_window == 10_000
    assert models_requests(server) == 0
    await (await registry.resolve("qwen")).model.request(ask("hi"), ModelSettings())
    assert server.requests[-1].headers["authorization"] == "Bearer sk-up"


async def test_the_profile_answers_when_the_upstream_cannot(make: Factory, server: FakeServer) -> None:
    server.handler = lambda request: Reply(500, json={"error": {"message": "down"}})
    registry = make(upstream=server.url + "/v1")
    assert (await registry.resolve("gpt-4o")).context_window == 128_000  # a failed /v1/models is not fatal


async def test_an_unknown_window_says_how_to_set_it(make: Factory, server: FakeServer) -> None:
    vllm(server, {"id": "a"}, {"id": "b"})
    registry = make(upstream=server.url + "/v1")
    with pytest.raises(ConfigurationError, match=r"model 'mystery' is unknown.*set --context-window"):
        await registry.resolve("mystery")
    route = ModelRoute("mine", "openai-chat", base_url=server.url + "/v1", api_key="k")
    with pytest.raises(ConfigurationError, match=r"set context_window in its \[\[models\]\] route"):
        await make(routes=(route,)).resolve("mine")


async def test_a_route_goes_to_its_own_upstream_under_its_model_name(make: Factory, server: FakeServer) -> None:
    vllm(server, {"id": "Qwen/Qwen3-8B", "max_model_len": 40_960})
    url = server.url + "/v1"
    routes = (
        ModelRoute("local", "openai-chat", model="Qwen/Qwen3-8B", base_url=url),
        ModelRoute("fixed", "openai-chat", model="Qwen/Qwen3-8B", base_url=url, context_window=12_000),
        ModelRoute("resp", "openai-responses", base_url=url, api_key="k", context_window=9_000),
    )
    registry = make(routes=routes)
    local = await registry.resolve("local")
    assert local.context_window == 40_960  # detected from the route's own upstream
    assert (await registry.resolve("local")).model is local.model  # built once
    assert (await registry.resolve("fixed")).context_window == 12_000
    assert isinstance((await registry.resolve("resp")).model, OpenAIResponsesModel)
    await local.model.request(ask("hi"), ModelSettings())
    assert server.requests[-1].json["model"] == "Qwen/Qwen3-8B"


async def test_every_provider_builds_on_its_adapter(make: Factory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAUDE_KEY", "sk-ant")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    routes = (
        ModelRoute("claude", "anthropic", model="claude-sonnet-4-5", api_key_env="CLAUDE_KEY"),
        ModelRoute("gem", "gemini", model="gemini-2.5-flash", api_key="g"),
        ModelRoute("co", "cohere", model="command-a-03-2025", api_key="c"),
        ModelRoute("rock", "bedrock", model="amazon.nova-pro-v1:0", options={"region": "us-east-1"}),
        ModelRoute("az", "azure", model="gpt-4o", api_key="a", options={"resource": "acme", "deployment": "prod"}),
    )
    registry = make(routes=routes)
    built = {name: type((await registry.resolve(name)).model).__name__ for name in ("claude", "gem", "co", "rock")}
    assert built == {"claude": "AnthropicModel", "gem": "GeminiModel", "co": "CohereModel", "rock": "BedrockModel"}
    assert (await registry.resolve("claude")).context_window == 200_000  # from the profile
    azure = (await registry.resolve("az")).model
    assert isinstance(azure, OpenAIChatModel)
    assert azure.provider.model_for("gpt-4o") == "prod"


async def test_a_missing_key_names_the_variable(make: Factory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_KEY", raising=False)
    registry = make(routes=(ModelRoute("claude", "anthropic", api_key_env="NOT_SET_KEY"),))
    with pytest.raises(ConfigurationError, match=r"\$NOT_SET_KEY, which is not set"):
        await registry.resolve("claude")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    openai = make(routes=(ModelRoute("gpt", "openai-chat"),))
    with pytest.raises(ConfigurationError, match=r"model 'gpt' \(openai-chat\) is not configured right: .*API key"):
        await openai.resolve("gpt")


async def test_close_closes_the_clients(server: FakeServer) -> None:
    vllm(server, {"id": "qwen", "max_model_len": 4_096})
    route = ModelRoute("local", "openai-chat", base_url=server.url + "/v1", context_window=4_096)
    registry = ModelRegistry(ServerConfig(upstream=server.url + "/v1", routes=(route,)))
    upstream = (await registry.resolve("qwen")).model
    local = (await registry.resolve("local")).model
    assert isinstance(upstream, OpenAIChatModel)
    assert isinstance(local, OpenAIChatModel)
    await registry.close()
    assert upstream.provider.client.is_closed()
    assert local.provider.client.is_closed()
