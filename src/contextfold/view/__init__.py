"""The view: the context window as an incremental fold over the log, its token accounting and its checks."""

from ._fold import View, Window, masked_output, summary_message
from ._tokens import DEFAULT_CHARS_PER_TOKEN, SUMMARY_HEADER, TokenEstimator, text_tokens

__all__ = [
    "DEFAULT_CHARS_PER_TOKEN",
    "SUMMARY_HEADER",
    "TokenEstimator",
    "View",
    "Window",
    "masked_output",
    "summary_message",
    "text_tokens",
]
