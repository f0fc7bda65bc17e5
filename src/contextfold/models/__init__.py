"""The provider seam, the shared adapter machinery, the provider adapters and the scripted model.

The adapters load on first use, so an optional SDK (anthropic, google-genai, cohere, boto3) is imported only by
whoever uses its adapter; a missing one raises an ImportError naming the extra to install.
"""

import importlib
from typing import TYPE_CHECKING, Any

from ._base import (
    ResponseBuilder,
    RetryPolicy,
    StreamingModel,
    close,
    collect,
    connection_lost,
    error_for_status,
    is_context_length_message,
    retry_after_seconds,
)
from ._profiles import profile_for
from ._protocol import (
    ChecksGrammar,
    Model,
    ModelProfile,
    ModelResponse,
    ModelSettings,
    ReasoningBlock,
    ReportsContextWindow,
    ResponseDone,
    StopReason,
    StreamEvent,
    TextChunk,
    ToolCallChunk,
    ToolCallRequest,
    ToolCallStart,
    checks_grammar,
    reports_context_window,
)
from ._scripted import ScriptedModel, Step, Stream, stream_of

# adapter name -> (module, the extra that installs its SDK)
_ADAPTERS = {
    "OpenAIProvider": ("_openai", None),
    "AzureProvider": ("_openai", None),
    "OpenAIChatModel": ("_openai_chat", None),
    "OpenAIResponsesModel": ("_openai_responses", None),
    "AnthropicProvider": ("_anthropic", "anthropic"),
    "AnthropicModel": ("_anthropic", "anthropic"),
    "GeminiProvider": ("_gemini", "gemini"),
    "GeminiModel": ("_gemini", "gemini"),
    "CohereProvider": ("_cohere", "cohere"),
    "CohereModel": ("_cohere", "cohere"),
    "BedrockProvider": ("_bedrock", "bedrock"),
    "BedrockModel": ("_bedrock", "bedrock"),
}

if TYPE_CHECKING:
    from ._anthropic import AnthropicModel, AnthropicProvider
    from ._bedrock import BedrockModel, BedrockProvider
    from ._cohere import CohereModel, CohereProvider
    from ._gemini import GeminiModel, GeminiProvider
    from ._openai import AzureProvider, OpenAIProvider
    from ._openai_chat import OpenAIChatModel
    from ._openai_responses import OpenAIResponsesModel


def __getattr__(name: str) -> Any:
    if name not in _ADAPTERS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, extra = _ADAPTERS[name]
    try:
        loaded = importlib.import_module(f"{__name__}.{module}")
    except ImportError as exc:
        raise ImportError(f"{name} needs the {extra!r} extra: pip install 'contextfold[{extra}]' ({exc})") from exc
    return getattr(loaded, name)


__all__ = [
    "AnthropicModel",
    "AnthropicProvider",
    "AzureProvider",
    "BedrockModel",
    "BedrockProvider",
    "ChecksGrammar",
    "CohereModel",
    "CohereProvider",
    "GeminiModel",
    "GeminiProvider",
    "Model",
    "ModelProfile",
    "ModelResponse",
    "ModelSettings",
    "OpenAIChatModel",
    "OpenAIProvider",
    "OpenAIResponsesModel",
    "ReasoningBlock",
    "ReportsContextWindow",
    "ResponseBuilder",
    "ResponseDone",
    "RetryPolicy",
    "ScriptedModel",
    "Step",
    "StopReason",
    "Stream",
    "StreamEvent",
    "StreamingModel",
    "TextChunk",
    "ToolCallChunk",
    "ToolCallRequest",
    "ToolCallStart",
    "checks_grammar",
    "close",
    "collect",
    "connection_lost",
    "error_for_status",
    "is_context_length_message",
    "profile_for",
    "reports_context_window",
    "retry_after_seconds",
    "stream_of",
]
