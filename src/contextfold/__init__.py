"""contextfold: an append-only event log per conversation, and the context window as a fold of it.

store = await open_store("contextfold.db")
conversation = await Conversation.create(store)
await conversation.append(user("hello"))
await conversation.fit(budget=16_000, summariser=model)   # compacts when the policy says so
window = conversation.window()                           # what the model sees

agent = Agent(model, store=store, instructions="...", tools=[my_function])
session = await agent.create_session()
result = await session.turn("hello")                     # or: async for event in session.stream("hello")
"""

from ._blocking import Blocking
from ._conversation import Conversation, Expansion
from ._errors import (
    AuthenticationError,
    BusyError,
    ConfigurationError,
    ConflictError,
    ContextfoldError,
    ContextLengthError,
    ContextOverflowError,
    GrammarError,
    InvalidEventError,
    InvalidRequestError,
    ModelAuthError,
    ModelError,
    ModelRequestError,
    ModelResponseError,
    ModelUnavailableError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
    SchemaVersionError,
    StoreError,
    UserError,
)
from ._recall import RecallHit
from .compaction import CompactionPolicy, CompactionResult
from .models import Model, ModelResponse, ModelSettings, ScriptedModel
from .runtime import Agent, AgentOptions, Session, Tool, ToolOutput, tool
from .store import Store, open_store
from .view import TokenEstimator, View, Window

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentOptions",
    "AuthenticationError",
    "Blocking",
    "BusyError",
    "CompactionPolicy",
    "CompactionResult",
    "ConfigurationError",
    "ConflictError",
    "ContextLengthError",
    "ContextOverflowError",
    "ContextfoldError",
    "Conversation",
    "Expansion",
    "GrammarError",
    "InvalidEventError",
    "InvalidRequestError",
    "Model",
    "ModelAuthError",
    "ModelError",
    "ModelRequestError",
    "ModelResponse",
    "ModelResponseError",
    "ModelSettings",
    "ModelUnavailableError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RateLimitError",
    "RecallHit",
    "SchemaVersionError",
    "ScriptedModel",
    "Session",
    "Store",
    "StoreError",
    "TokenEstimator",
    "Tool",
    "ToolOutput",
    "UserError",
    "View",
    "Window",
    "__version__",
    "open_store",
    "tool",
]
