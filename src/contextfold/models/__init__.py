"""The provider seam and the scripted model that ships for tests and demos."""

from ._protocol import Model, ModelResponse, ModelSettings, ToolCallRequest
from ._scripted import ScriptedModel, Step

__all__ = ["Model", "ModelResponse", "ModelSettings", "ScriptedModel", "Step", "ToolCallRequest"]
