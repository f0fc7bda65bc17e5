"""Every error contextfold raises.

    ContextfoldError
    ├── UserError                 the caller asked for something wrong; fix the input and retry
    │   ├── InvalidRequestError   a parameter is out of range or malformed
    │   ├── InvalidEventError     unknown event type, malformed payload, bad field value
    │   ├── SchemaVersionError    an event written by a newer (or unknown) schema version
    │   ├── NotFoundError         unknown conversation, item or compaction
    │   └── ContextOverflowError  what must stay in the window (instructions, pins, new input) exceeds the budget
    ├── ConflictError             the log moved on since you read it (stale head); reload and retry
    ├── GrammarError              a view would break a provider's message grammar (a bug, never sent)
    ├── StoreError                the storage backend failed
    └── ModelError                a model call failed
        ├── ContextLengthError    the provider refused the prompt as too long
        └── ModelResponseError    the model answered with something unusable

User mistakes are kept apart from upstream failures so that one place (the server) can map them to status codes.
"""

from __future__ import annotations


class ContextfoldError(Exception):
    """Base of every contextfold error."""


class UserError(ContextfoldError):
    """The caller asked for something invalid. The message says what and how to fix it."""


class InvalidRequestError(UserError):
    """A parameter is out of range or malformed."""


class InvalidEventError(UserError):
    """An event (or its payload) is not valid."""


class SchemaVersionError(UserError):
    """An event carries a schema version this build cannot read."""


class NotFoundError(UserError):
    """A conversation, item or compaction does not exist."""


class ContextOverflowError(UserError):
    """What must stay in the window does not fit the token budget, even after every compaction tier."""


class ConflictError(ContextfoldError):
    """An append expected a head sequence that is no longer the conversation's head."""

    def __init__(self, conversation_id: str, expected_head: int, actual_head: int) -> None:
        super().__init__(
            f"conversation {conversation_id!r} moved on: expected head {expected_head}, found {actual_head}; "
            "reload the conversation and retry"
        )
        self.conversation_id = conversation_id
        self.expected_head = expected_head
        self.actual_head = actual_head


class GrammarError(ContextfoldError):
    """A rendered view breaks the target API's message grammar."""

    def __init__(self, api: str, violations: list[str]) -> None:
        super().__init__(f"view is not valid for {api}: " + "; ".join(violations))
        self.api = api
        self.violations = violations


class StoreError(ContextfoldError):
    """The storage backend failed."""


class ModelError(ContextfoldError):
    """A model call failed."""


class ContextLengthError(ModelError):
    """The provider refused the prompt because it exceeds the model's context window."""


class ModelResponseError(ModelError):
    """The model's answer could not be used (empty, malformed, or not what was asked)."""
