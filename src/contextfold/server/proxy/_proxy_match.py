"""Which stored conversation a proxied request continues, and which of its messages are new.

A client that keeps its own history sends all of it on every request. After each exchange the proxy records two
*anchors* for the history the client then holds (the request's messages and the answer it was shown), both saying
"the conversation stood at seq S":

- a **chain key**: a hash chain over the canonical keys of the instructions and every message, so the longest
  known prefix of a request's history is found whatever its length;
- a **tail key**: a hash of the last two messages alone, so that a client that trimmed the start of its own history,
  or rewrote its instructions, is still found. What it no longer sends stays in the log.

A request is matched by its longest prefix whose chain key is known, else by the latest position whose tail key is
known; only positions holding an assistant message can match (every anchor ends with an answer), and never the last
message, so a match always leaves something new. The messages after the match are the turn's input.

A tail match proves nothing about the messages before the last two, so it is taken only when the stored log ends
with the client's whole history (`_match_log`): a different client's history that happens to end the same way
("thanks", a generic reply) is never spliced onto another's log; it starts a conversation of its own.

The same anchors serve stateless Responses requests (`_responses_history`), whose items are hashed by what they
parse to: a history of Responses items never matches one of chat messages, nor the other way round.

A match on a conversation that has moved on since (another completed turn after the anchor: the client went back and
regenerated, or edited its last message) is a branch: the proxy continues a fork of the conversation as it stood.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ...events import TurnMarker
from ...store import Anchor, ServerStore
from ...store._anchors import MAX_KEYS
from ._chains import Ends

_DIGEST = 16
_MAX_CANDIDATES = 8
"""Conversations looked at for one key (identical histories in several conversations: rare, but possible)."""
_RECENT = 4
"""Assistant positions looked up first, from the end: a client that resends its history is found among them."""
_ENDS = Ends()
"""Where recent histories' chains ended: a resent history hashes only what it added (`_chains`)."""


def _feed(digest: Any, part: bytes) -> None:
    digest.update(len(part).to_bytes(8, "little") + part)  # length-prefixed: no two histories feed the same bytes


def system_key(system_prompt: str | None) -> bytes:
    return b"" if system_prompt is None else b"system\0" + system_prompt.encode()


class Keyed(Protocol):
    @property
    def key(self) -> bytes: ...
    @property
    def role(self) -> str: ...


class Source(Protocol):
    """What a history is hashed from: a proxied request (`ProxyRequest`) or a Responses input."""

    @property
    def system_prompt(self) -> str | None: ...
    @property
    def messages(self) -> Sequence[Keyed]: ...


class History:
    """A request's history, hashed once: the chain after each assistant message (where anchors can be) and after
    the last message (what the next anchors extend). One running digest: `digest()` does not end it.

    Only the latest `_RECENT` assistant positions (what `find` looks up first, and nearly always finds) are read off
    the running digest as it goes; the chain at an older position is computed on the one request that needs it
    (`link`), so a long history costs one pass of its keys through the digest, not a digest per assistant message.
    A history that extends one hashed recently (a client resending its history) picks up the running digest where
    that one ended (`_chains`) and feeds only its new keys: the same digests, a few messages' work.
    """

    def __init__(self, request: Source) -> None:
        self.request = request
        messages = request.messages
        last = len(messages) - 1
        self._positions = [i for i, message in enumerate(messages) if message.role == "assistant" and i < last]
        self._links: dict[int, bytes] = {}
        self._all = False
        self._keys = keys = [message.key for message in messages]
        system, wanted = system_key(request.system_prompt), self._positions[-_RECENT:]
        kept = _ENDS.take(system, keys)  # where an earlier request's history ended, when this one extends it
        if kept is not None and all(i in kept.links for i in wanted if i < len(kept.keys)):
            start, running = len(kept.keys), kept.running.copy()
            self._links = {i: kept.links[i] for i in wanted if i < start}
        else:
            start, running = 0, self._start()
        self._end = self._run(running, start, len(keys), [i for i in wanted if i >= start])
        # the chain after the last message too: a link, should a later history have an assistant message there
        _ENDS.put(system, keys, self._end, {**self._links, last: self._end.digest()})

    def _run(self, running: Any, start: int, through: int, wanted: Sequence[int]) -> Any:
        """`running` fed the keys from `start` up to `through`, with the chain at each of the `wanted` positions
        (ascending) read off into `_links`. It is fed as `_feed` feeds one part at a time, but in one joined slice
        per wanted position: a few calls whatever the history's length, the same bytes, the same digests."""
        fed: list[bytes] = [b""] * (2 * (through - start))
        fed[1::2] = keys = self._keys[start:through]
        fed[0::2] = [len(key).to_bytes(8, "little") for key in keys]  # length-prefixed, as `_feed`
        at = 0
        for i in wanted:
            cut = 2 * (i - start) + 2
            running.update(b"".join(fed[at:cut]))
            self._links[i] = running.digest()
            at = cut
        running.update(b"".join(fed[at:]))
        return running

    def _start(self) -> Any:
        running = hashlib.blake2b(b"chain", digest_size=_DIGEST)
        _feed(running, system_key(self.request.system_prompt))
        return running

    def link(self, i: int) -> bytes:
        """The chain after message `i` (an assistant position)."""
        if i not in self._links and not self._all:
            self._run(self._start(), 0, self._positions[-1] + 1 if self._positions else 0, self._positions)
            self._all = True
        return self._links[i]

    def positions(self) -> list[int]:
        """Where a match may end, latest first."""
        return self._positions[::-1]

    def keys(self, positions: Sequence[int]) -> dict[str, tuple[int, int]]:
        """The anchor keys to look up at `positions`: key -> (position, kind: 1 chain, 0 tail)."""
        messages = self.request.messages
        out: dict[str, tuple[int, int]] = {}
        for i in positions:
            out[chain_anchor(self.link(i))] = (i, 1)
            if i >= 1:
                out[tail_anchor(messages[i - 1].key, messages[i].key)] = (i, 0)
        return out

    def anchors_after(self, *answer_keys: bytes) -> list[str]:
        """The anchors to record once the client has been shown the answer whose canonical key is `answer_key`
        (a Responses answer is several items: their keys in order)."""
        link = self._end.copy()
        for key in answer_keys:
            _feed(link, key)
        keys = [chain_anchor(link.digest())]
        last = [m.key for m in self.request.messages[-1:]] + list(answer_keys)
        if len(last) >= 2:
            keys.append(tail_anchor(last[-2], last[-1]))
        return keys


def chain_anchor(link: bytes) -> str:
    return "c" + link.hex()


def tail_anchor(before: bytes, last: bytes) -> str:
    digest = hashlib.blake2b(b"tail", digest_size=_DIGEST)
    _feed(digest, before)
    _feed(digest, last)
    return "t" + digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Match:
    conversation_id: str
    seq: int
    """Where the conversation stood when the client last held this history."""
    matched: int
    """How many of the request's messages the conversation already has: the rest are new."""
    by_chain: bool = True
    """Whether a chain anchor proves the history before the match (else only its last two messages were seen)."""


async def find(store: ServerStore, tenant: str, history: History, *, only: str | None = None) -> Match | None:
    """The best match for the request among the tenant's anchors (`only`: within that conversation).

    The latest assistant positions are looked up first (one query): a chain match there is the longest prefix.
    Otherwise every position's chain is looked up, and the longest chain match is taken, unless a tail match comes
    later in the same conversation (the client rewrote or dropped something in between) or there is no chain match
    at all (it trimmed the start of its history).
    """
    positions = history.positions()
    if not positions:
        return None
    recent = history.keys(positions[:_RECENT])
    found = await _found(store, tenant, recent, only)
    if not any(kind for _, kind in found.values()) and len(positions) > _RECENT:
        rest = {chain_anchor(history.link(i)): (i, 1) for i in positions[_RECENT:]}
        found.update(await _found(store, tenant, rest, only))
    if not found:
        return None
    chains = [a for a, (_, kind) in found.items() if kind]
    tails = [a for a, (_, kind) in found.items() if not kind]
    best_chain = max((found[a][0] for a in chains), default=-1)
    best_tail = max((found[a][0] for a in tails), default=-1)
    pick = chains if best_chain >= 0 else tails
    position = best_chain if best_chain >= 0 else best_tail
    if best_tail > best_chain >= 0:
        at_tail = [a for a in tails if found[a][0] == best_tail]
        chain_conversations = {a.conversation_id for a in chains if found[a][0] == best_chain}
        if any(a.conversation_id in chain_conversations for a in at_tail):
            pick, position = [a for a in at_tail if a.conversation_id in chain_conversations], best_tail
    best = [a for a in pick if found[a][0] == position][:_MAX_CANDIDATES]
    chosen = await _freshest(store, best)
    return Match(chosen.conversation_id, chosen.seq, position + 1, by_chain=best_chain >= 0)


async def _found(
    store: ServerStore, tenant: str, keys: dict[str, tuple[int, int]], only: str | None
) -> dict[Anchor, tuple[int, int]]:
    """The known anchors among `keys` (newest first), with their (position, kind). A long history has more
    candidate keys than the store takes in one call: they are looked up a batch at a time."""
    wanted = list(keys)
    anchors: list[Anchor] = []
    for start in range(0, len(wanted), MAX_KEYS):
        anchors += await store.anchors.find(wanted[start : start + MAX_KEYS], tenant=tenant)
    if len(wanted) > MAX_KEYS:  # batches merged in the store's order
        anchors.sort(key=lambda a: (-a.created_at, -a.seq, a.conversation_id, a.key))
    return {a: keys[a.key] for a in anchors if only is None or a.conversation_id == only}


async def _freshest(store: ServerStore, anchors: list[Anchor]) -> Anchor:
    """Among anchors of one key (newest first), the oldest whose conversation has not moved on, else the newest.

    Two clients with identical histories so far (the same first question, the same answer) are told apart only by
    the order they came in: the oldest free conversation goes to the first client to go on, so each keeps its own.
    """
    if len(anchors) == 1:  # the only one either way: no need to ask whether it moved on
        return anchors[0]
    for anchor in reversed(anchors):
        if not await moved_on(store, anchor.conversation_id, anchor.seq):
            return anchor
    return anchors[0]


async def moved_on(store: ServerStore, conversation_id: str, seq: int, *, head: int | None = None) -> bool:
    """Whether a turn completed in the conversation after `seq` (failed or interrupted turns, compactions and pins
    do not count: a client retrying after a failure continues where it was). `head`: the store's head, when the
    caller knows it (the lease's take reads it), so the common case (nothing after `seq`) asks nothing."""
    if head is None:
        head = (await store.conversations.get(conversation_id)).head
    if head <= seq:
        return False
    later = await store.read(conversation_id, after=seq)
    return any(isinstance(e, TurnMarker) and e.status == "completed" for e in later)
