"""The end of a server turn: what was staged, the response record, the anchors and the lease release, one commit.

The lease goes in the same transaction (`ConversationLocks.owner`), and `released` tells the hold not to give it
back a second time. A turn that is not staging (a flush of it failed and it was cancelled since) commits its
records alone, in the same one call.
"""

from __future__ import annotations

from .._conversation import Conversation
from .._errors import StoreError
from ..store import ResponseRecord, TurnAnchors
from ._locks import ConversationLocks


async def commit_turn(
    locks: ConversationLocks,
    conversation: Conversation,
    *,
    response: ResponseRecord | None = None,
    anchors: TurnAnchors | None = None,
) -> None:
    """Flush `conversation` with the turn's records, giving its lease back in the same transaction. A failure
    writes nothing and is raised (a 503 for an outage); the hold then releases the lease itself, unless the store
    could not be reached (`ConversationLocks.unreachable`)."""
    owner = locks.owner(conversation.id)
    if not conversation.staging:
        conversation.stage()
    try:
        await conversation.flush(response=response, anchors=anchors, release=owner)
    except StoreError:
        locks.unreachable(conversation.id)  # the release would wait on the same outage: it lapses on its own
        raise
    if owner is not None:
        locks.released(conversation.id)
