"""Every error contextfold raises.

    ContextfoldError
    ├── UserError                 the caller asked for something wrong; fix the input and retry
    │   ├── InvalidRequestError   a parameter is out of range or malformed
    │   ├── InvalidEventError     unknown event type, malformed payload, bad field value
    │   ├── SchemaVersionError    an event written by a newer (or unknown) schema version
    │   ├── NotFoundError         unknown conversation, item or compaction
    │   ├── ConfigurationError    a provider, model or agent is configured wrongly (missing key, unknown window)
    │   ├── BusyError             the session already runs a turn; wait for it or interrupt it
    │   ├── AuthenticationError   no API key, or one the server does not know (or revoked)
    │   ├── PayloadTooLargeError  a request body, item count or tool output over a documented limit
    │   └── ContextOverflowError  what must stay in the window (instructions, pins, new input) exceeds the budget
    ├── ConflictError             the log moved on since you read it (stale head); reload and retry
    ├── GrammarError              a view would break a provider's message grammar (a bug, never sent)
    ├── StoreError                the storage backend failed
    └── ModelError                a model call failed (`retryable` says whether trying again may help)
        ├── ContextLengthError    the provider refused the prompt as too long (compact, then retry)
        ├── ModelRequestError     the provider rejected the request as invalid (400/404/422); never retried
        ├── ModelAuthError        the credentials were refused (401/403); never retried
        ├── RateLimitError        429; retried after `retry_after` seconds when the provider says
        ├── ModelUnavailableError 5xx, timeout or connection failure; retried with backoff
        └── ModelResponseError    the answer was unusable: malformed JSON, a stream cut off, an empty reply

User mistakes are kept apart from upstream failures so that one place (the server) can map them to status codes.
"""

from __future__ import annotations


class ContextfoldError(Exception):
    """Base of every contextfold error."""


class UserError(ContextfoldError):
    """The caller asked for something invalid. The message says what and how to fix it."""


class InvalidRequestError(UserError):
    """A parameter is out of range or malformed. `param` names it (for example `input[2].content`) when known."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class InvalidEventError(UserError):
    """An event (or its payload) is not valid."""


class SchemaVersionError(UserError):
    """An event carries a schema version this build cannot read."""


class NotFoundError(UserError):
    """A conversation, item or compaction does not exist. `param` names the request field that named it."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class ConfigurationError(UserError):
    """A provider, model or agent is configured wrongly: a missing credential, an unknown context window."""


class BusyError(UserError):
    """The session is already running a turn. Wait for it to finish or interrupt it."""


class AuthenticationError(UserError):
    """The request carries no API key, or one the server does not know or has revoked."""


class PayloadTooLargeError(UserError):
    """A request is over a documented size limit (body bytes, items per call, tool output bytes)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


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
    """A model call failed. `status` is the provider's HTTP status when there was one."""

    retryable = False

    def __init__(self, message: str, *, status: int | None = None, provider: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.provider = provider


class ContextLengthError(ModelError):
    """The provider refused the prompt because it exceeds the model's context window."""


class ModelRequestError(ModelError):
    """The provider rejected the request itself (bad parameters, unknown model). Retrying cannot help."""


class ModelAuthError(ModelError):
    """The provider refused the credentials."""


class RateLimitError(ModelError):
    """The provider is rate limiting. `retry_after` is how long it asked us to wait, in seconds, if it said."""

    retryable = True

    def __init__(
        self, message: str, *, retry_after: float | None = None, status: int | None = 429, provider: str | None = None
    ) -> None:
        super().__init__(message, status=status, provider=provider)
        self.retry_after = retry_after


class ModelUnavailableError(ModelError):
    """The provider failed or could not be reached (5xx, timeout, connection error). Worth retrying."""

    retryable = True


class ModelResponseError(ModelError):
    """The model's answer could not be used (empty, malformed, cut off, or not what was asked)."""
