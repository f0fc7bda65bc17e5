"""The proxy's anchors, what both stores share: which keys and seqs a put or find accepts, how a row reads back.

An anchor says "when this tenant's client history hashes to `key`, conversation C stood at seq S". The proxy
records two per exchange and, on every request, asks which of the request's candidate keys are known. As in
`_common` and `_serving`, every rule lives here, so the SQLite and PostgreSQL stores differ only in SQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._errors import InvalidRequestError, PayloadTooLargeError
from ._protocol import Anchor

MAX_KEYS = 10_000
"""Keys per put or find: far more than one request's candidates, small enough to bound one statement."""
MAX_KEY_LENGTH = 64
_MAX_SEQ = 2**63 - 1  # a 64-bit column on both backends

ANCHOR_COLUMNS = "key, conversation_id, seq, created_at"


def check_keys(keys: Sequence[str]) -> list[str]:
    """The distinct keys, sorted: a statement never touches one row twice, and racing puts lock rows in one order."""
    if isinstance(keys, (str, bytes)) or not isinstance(keys, Sequence):
        raise InvalidRequestError(f"anchor keys must be a list of strings, got {type(keys).__name__}", param="keys")
    if len(keys) > MAX_KEYS:
        raise PayloadTooLargeError(
            f"{len(keys)} anchor keys in one call; pass at most {MAX_KEYS} (split the call)", param="keys"
        )
    for index, key in enumerate(keys):
        # Printable also keeps NUL out, which PostgreSQL text cannot hold: both backends accept the same keys.
        if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_LENGTH or not key.isprintable():
            raise InvalidRequestError(
                f"anchor key {key!r} must be a string of 1 to {MAX_KEY_LENGTH} printable characters"
                " (a hex digest of the history is)",
                param=f"keys[{index}]",
            )
    return sorted(set(keys))


def check_seq(seq: int) -> int:
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= _MAX_SEQ:
        raise InvalidRequestError(f"an anchor's seq must be an integer >= 0, got {seq!r}", param="seq")
    return seq


def anchor_of(row: Sequence[Any]) -> Anchor:
    return Anchor(str(row[0]), str(row[1]), int(row[2]), float(row[3]))
