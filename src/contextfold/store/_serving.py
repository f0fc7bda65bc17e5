"""What both stores share for the server's records: tenant names, API key secrets, response rows, lease arguments.

As in `_common`, every rule about what these records accept lives here, so the SQLite and PostgreSQL stores
differ only in SQL.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import secrets
import time
from typing import Any, Literal

from .._errors import InvalidRequestError, NotFoundError
from ..events import new_id
from ._protocol import ApiKey, ResponseRecord

RESPONSE_STATUSES = frozenset({"in_progress", "completed", "incomplete", "failed", "cancelled"})
SECRET_PREFIX = "cf-"
_TENANT = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_MAX_KEY_NAME = 256
_MAX_SECRET = 256

# --- conversations ------------------------------------------------------------------------------------------

CONVERSATION_COLUMNS = "id, created_at, metadata, head, checkpoint, tenant"


def check_tenant(tenant: str, *, allow_empty: bool = False) -> str:
    """A tenant name: 1-64 letters, digits, '_', '.' or '-' ('' too where no tenant is a valid owner)."""
    if allow_empty and tenant == "":
        return tenant
    if not isinstance(tenant, str) or not _TENANT.fullmatch(tenant):
        raise InvalidRequestError(
            f"tenant {tenant!r} is not a valid tenant name; use 1 to 64 letters, digits, '_', '.' or '-'",
            param="tenant",
        )
    return tenant


def check_new_id(conversation_id: str) -> str:
    """A caller-chosen conversation id: PostgreSQL cannot hold a NUL byte in text, so neither store takes one (and
    a lookup of an id holding one finds nothing on both)."""
    if "\x00" in conversation_id:
        raise InvalidRequestError(
            f"conversation id {conversation_id!r} holds a NUL (0x00) byte, which no stored id may hold; pick another",
            param="id",
        )
    return conversation_id


def check_order(order: str) -> Literal["ASC", "DESC"]:
    if order == "asc":
        return "ASC"
    if order == "desc":
        return "DESC"
    raise InvalidRequestError(f"order must be 'asc' or 'desc', got {order!r}", param="order")


def page_query(mark: str, tenant: str | None, cursor: tuple[float, str] | None, order: str) -> tuple[str, list[Any]]:
    """SQL for one page of conversations (placeholders spelled `mark`) and its parameters, bar the limit."""
    direction = check_order(order)
    where: list[str] = []
    params: list[Any] = []
    if tenant is not None:
        where.append(f"tenant = {mark}")
        params.append(tenant)
    if cursor is not None:
        where.append(f"(created_at, id) {'>' if direction == 'ASC' else '<'} ({mark}, {mark})")
        params.extend(cursor)
    sql = f"SELECT {CONVERSATION_COLUMNS} FROM conversations"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY created_at {direction}, id {direction} LIMIT {mark}"
    return sql, params


def cursor_of(row: tuple[Any, ...] | None, after: str, tenant: str | None) -> tuple[float, str]:
    """Where a page starts: the (created_at, id) of the `after` conversation, which must be visible to `tenant`."""
    if row is None or (tenant is not None and row[2] != tenant):
        raise NotFoundError(
            f"cannot list after conversation {after!r}: it does not exist"
            + ("" if tenant is None else f" for tenant {tenant!r}")
            + "; pass the id of a conversation from the previous page"
        )
    return float(row[0]), str(row[1])


# --- responses ----------------------------------------------------------------------------------------------

RESPONSE_COLUMNS = "id, tenant, conversation_id, created_at, status, first_seq, last_seq, previous_response_id, data"


def response_row(record: ResponseRecord) -> tuple[Any, ...]:
    """A record as a row of RESPONSE_COLUMNS, after checking what the store relies on."""
    if record.status not in RESPONSE_STATUSES:
        raise InvalidRequestError(
            f"response {record.id!r} has status {record.status!r}; use one of {sorted(RESPONSE_STATUSES)}"
        )
    if record.first_seq < 0 or record.last_seq < 0:
        raise InvalidRequestError(
            f"response {record.id!r} has seqs first={record.first_seq}, last={record.last_seq}; both must be >= 0"
        )
    check_tenant(record.tenant, allow_empty=True)
    if not isinstance(record.data, dict):
        raise InvalidRequestError(f"response {record.id!r} data must be a dict, got {type(record.data).__name__}")
    try:
        # Plain JSON text, not JSONB: it keeps the dict exactly (key order included), and nothing queries inside it.
        data = json.dumps(record.data)
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"response {record.id!r} data cannot be stored as JSON: {exc}") from None
    return (
        record.id,
        record.tenant,
        record.conversation_id,
        record.created_at,
        record.status,
        record.first_seq,
        record.last_seq,
        record.previous_response_id,
        data,
    )


def response_of(row: tuple[Any, ...]) -> ResponseRecord:
    return ResponseRecord(
        row[0], row[1], row[2], float(row[3]), row[4], int(row[5]), int(row[6]), row[7], json.loads(row[8])
    )


def response_missing(response_id: str) -> NotFoundError:
    return NotFoundError(f"response {response_id!r} does not exist (or was deleted)")


# --- API keys -----------------------------------------------------------------------------------------------

KEY_COLUMNS = "id, tenant, name, prefix, created_at, revoked_at"


def hash_secret(secret: str) -> str:
    # A plain SHA-256, not a slow password hash: the secret is 32 random bytes, far beyond any guessing, so a slow
    # hash would buy nothing and cost every request. It is also what makes lookup by hash safe: timing can tell
    # an attacker at most about the hash of a guess, never about a stored secret.
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key(tenant: str, name: str) -> tuple[str, ApiKey, str]:
    """A fresh key: (its secret, its record, the hash to store)."""
    check_tenant(tenant)
    if not isinstance(name, str) or len(name) > _MAX_KEY_NAME or (name and not name.isprintable()):
        raise InvalidRequestError(
            f"key name {name!r} must be printable text of at most {_MAX_KEY_NAME} characters", param="name"
        )
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(new_id("key"), tenant, name, secret[:8], time.time())
    return secret, key, hash_secret(secret)


def lookup_hash(secret: str) -> str | None:
    """The hash to look a presented secret up by, or None when it cannot be a key (no need to ask the store)."""
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX) or len(secret) > _MAX_SECRET:
        return None
    return hash_secret(secret)


def key_of(row: tuple[Any, ...]) -> ApiKey:
    return ApiKey(row[0], row[1], row[2], row[3], float(row[4]), None if row[5] is None else float(row[5]))


def verified(row: tuple[Any, ...] | None, digest: str) -> ApiKey | None:
    """The key a by-hash lookup found (its last column the stored hash), compared again in constant time."""
    if row is None or not hmac.compare_digest(str(row[-1]), digest):
        return None
    return key_of(row)


def key_missing(key_id: str) -> NotFoundError:
    return NotFoundError(f"API key {key_id!r} does not exist; list the keys to find its id")


# --- turn leases --------------------------------------------------------------------------------------------


def check_lease(owner: str, ttl: float) -> None:
    if not isinstance(owner, str) or not owner:
        raise InvalidRequestError(f"a lease owner must be a non-empty string, got {owner!r}")
    if not isinstance(ttl, (int, float)) or not math.isfinite(ttl) or ttl <= 0:
        raise InvalidRequestError(f"a lease ttl must be a positive number of seconds, got {ttl!r}")


def conversation_missing(conversation_id: str) -> NotFoundError:
    return NotFoundError(f"conversation {conversation_id!r} does not exist; create it first")
