"""Azure OpenAI: the deployment's path, the api-version query, the api-key header, the deployment as the model,
missing configuration; streaming goes through the same model classes as OpenAI (tested in their own files)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from contextfold import ConfigurationError, ModelAuthError
from contextfold.models import ModelSettings, ResponseDone, TextChunk, ToolCallRequest, ToolCallStart
from contextfold.models._openai import AzureProvider
from contextfold.models._openai_chat import OpenAIChatModel
from contextfold.models._openai_responses import OpenAIResponsesModel

from .fakes._server import FakeServer, Reply, StreamReply
from .fakes.fake_openai import (
    ResponsesEvents,
    ask,
    chat_finish,
    chat_stream,
    chat_text,
    chat_tool_call,
    chat_usage,
    error_body,
    tool_window,
)

SETTINGS = ModelSettings()


@pytest.fixture
async def provider(server: FakeServer) -> AsyncIterator[AzureProvider]:
    async with AzureProvider(deployment="prod-gpt4o", api_key="azure-key", endpoint=server.url) as created:
        yield created


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_AD_TOKEN", "OPENAI_API_VERSION"):
        monkeypatch.delenv(name, raising=False)


async def test_streams_text_and_a_tool_call(server: FakeServer, provider: AzureProvider) -> None:
    server.reply(
        StreamReply(
            chat_stream(
                chat_text("Let me", " check."),
                chat_tool_call(0, "call_1", "weather", '{"city":', ' "Oslo"}'),
                chat_finish("tool_calls"),
                chat_usage(30, 12, cached=0),
            )
        )
    )
    model = OpenAIChatModel("gpt-4o", provider)
    events = [e async for e in model.stream(tool_window(), SETTINGS)]
    assert [e.text for e in events if isinstance(e, TextChunk)] == ["Let me", " check."]
    assert [e for e in events if isinstance(e, ToolCallStart)] == [ToolCallStart(0, "call_1", "weather")]
    done = events[-1]
    assert isinstance(done, ResponseDone)
    assert done.response.tool_calls == [ToolCallRequest("call_1", "weather", '{"city": "Oslo"}')]
    assert (done.response.stop_reason, done.response.input_tokens, done.response.output_tokens) == (
        "tool_calls",
        30,
        12,
    )


async def test_request_goes_to_the_deployment(server: FakeServer, provider: AzureProvider) -> None:
    server.reply(StreamReply(chat_stream(chat_text("ok"), chat_finish("stop"))))
    await OpenAIChatModel("gpt-4o", provider).request(tool_window(), SETTINGS)
    request = server.requests[0]
    assert (request.method, request.path) == ("POST", "/openai/deployments/prod-gpt4o/chat/completions")
    assert request.query == {"api-version": ["2024-10-21"]}
    assert request.headers["api-key"] == "azure-key"
    assert "authorization" not in request.headers
    body = request.json
    assert body["model"] == "prod-gpt4o"  # the deployment, whatever the model is called
    assert body["max_completion_tokens"] == 500  # Azure follows OpenAI
    assert "max_tokens" not in body


async def test_responses_api_on_azure(server: FakeServer, clean_env: None) -> None:
    async with AzureProvider(
        deployment="prod-o3", api_version="2025-04-01-preview", api_key="k", endpoint=server.url
    ) as provider:
        stream = ResponsesEvents("o3").created().reasoning("ENC").text("ok").completed()
        server.reply(stream.reply())
        response = await OpenAIResponsesModel("o3", provider).request(ask("Hi"), SETTINGS)
    assert response.text == "ok"
    assert [block.provider for block in response.reasoning] == ["azure"]  # passed back to Azure only
    request = server.requests[0]
    assert (request.path, request.query) == ("/openai/responses", {"api-version": ["2025-04-01-preview"]})
    assert request.json["model"] == "prod-o3"


async def test_errors_name_azure(server: FakeServer, provider: AzureProvider) -> None:
    server.handler = lambda request: Reply(
        401, json=error_body("Access denied due to invalid subscription key.", "401")
    )
    with pytest.raises(ModelAuthError, match="azure answered 401") as caught:
        await OpenAIChatModel("gpt-4o", provider).request(ask("Hi"), SETTINGS)
    assert caught.value.provider == "azure"


async def test_resource_builds_the_endpoint(clean_env: None) -> None:
    async with AzureProvider("contoso", deployment="d", api_key="k") as provider:
        assert provider.endpoint == "https://contoso.openai.azure.com"
        assert provider.base_url.startswith("https://contoso.openai.azure.com/openai")


async def test_key_and_endpoint_from_the_environment(monkeypatch: pytest.MonkeyPatch, clean_env: None) -> None:
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "env-key")
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://env-resource.openai.azure.com")
    async with AzureProvider(deployment="d") as provider:
        assert provider.endpoint == "https://env-resource.openai.azure.com"


def test_missing_resource(clean_env: None) -> None:
    with pytest.raises(ConfigurationError, match="resource"):
        AzureProvider(deployment="d", api_key="k")


def test_missing_key(clean_env: None) -> None:
    with pytest.raises(ConfigurationError, match="AZURE_OPENAI_API_KEY"):
        AzureProvider("contoso", deployment="d")


def test_missing_deployment(clean_env: None) -> None:
    with pytest.raises(ConfigurationError, match="deployment"):
        AzureProvider("contoso", deployment="", api_key="k")
