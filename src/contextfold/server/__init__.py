"""The OpenAI-compatible server: Responses + Conversations API over the event log.

from contextfold.server import ServerConfig, create_app
app = create_app(ServerConfig(db="contextfold.db"))   # an ASGI app; `contextfold serve` runs it with uvicorn
"""

from ._app import create_app
from ._config import Limits, ModelRoute, ServerConfig, load_config
from ._registry import ModelRegistry, ResolvedModel

__all__ = ["Limits", "ModelRegistry", "ModelRoute", "ResolvedModel", "ServerConfig", "create_app", "load_config"]
