"""`_proxy_match.History`: the chain at every assistant position, read lazily past the latest few, equals the chain
hashed eagerly message by message (what anchors recorded before hold)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from contextfold.server.proxy._proxy_match import _RECENT, History, chain_anchor, system_key


@dataclass(frozen=True)
class _Keyed:
    key: bytes
    role: str


@dataclass(frozen=True)
class _Source:
    system_prompt: str | None
    messages: tuple[_Keyed, ...]


def eager(source: _Source) -> dict[int, bytes]:
    """The chain after each assistant message but the last message, hashed as anchors always were."""
    running = hashlib.blake2b(b"chain", digest_size=16)
    prompt = system_key(source.system_prompt)
    running.update(len(prompt).to_bytes(8, "little") + prompt)
    out: dict[int, bytes] = {}
    for i, message in enumerate(source.messages):
        running.update(len(message.key).to_bytes(8, "little") + message.key)
        if message.role == "assistant" and i < len(source.messages) - 1:
            out[i] = running.digest()
    return out


messages = st.lists(st.builds(_Keyed, st.binary(max_size=6), st.sampled_from(["user", "assistant", "tool"])))


@given(st.none() | st.text(max_size=5), messages, st.booleans())
def test_lazy_links_equal_the_eager_chain(prompt: str | None, listed: list[_Keyed], oldest_first: bool) -> None:
    source = _Source(prompt, tuple(listed))
    history = History(source)
    expected = eager(source)
    positions = history.positions()
    assert positions == sorted(expected, reverse=True)
    for i in positions[::-1] if oldest_first else positions:
        assert history.link(i) == expected[i]
    if expected:
        recorded = history.anchors_after(b"answer")
        assert recorded == History(source).anchors_after(b"answer")


def _old_construction(source: _Source) -> tuple[dict[int, bytes], Any]:
    """`History.__init__` as it was before the chain was fed in joined slices (two `update` calls per message):
    the links it read off at the latest `_RECENT` assistant positions and the running digest at the end."""
    running = hashlib.blake2b(b"chain", digest_size=16)
    prompt = system_key(source.system_prompt)
    running.update(len(prompt).to_bytes(8, "little") + prompt)
    last = len(source.messages) - 1
    positions = [i for i, message in enumerate(source.messages) if message.role == "assistant" and i < last]
    wanted = set(positions[-_RECENT:])
    links: dict[int, bytes] = {}
    update = running.update
    for i, message in enumerate(source.messages):
        update(len(message.key).to_bytes(8, "little"))
        update(message.key)
        if i in wanted:
            links[i] = running.digest()
    return links, running


keys = st.lists(st.builds(_Keyed, st.binary(max_size=300), st.sampled_from(["user", "assistant", "tool"])), max_size=40)


@given(st.none() | st.text(max_size=20), keys)
def test_the_joined_feed_hashes_as_the_per_message_loop_did(prompt: str | None, listed: list[_Keyed]) -> None:
    """Anchors already stored must still match: the links read off at construction, the end digest and the chain
    anchor recorded after an answer (which extends it) are byte for byte those of the old loop."""
    source = _Source(prompt, tuple(listed))
    history = History(source)
    links, end = _old_construction(source)
    assert history._links == links
    assert history._end.digest() == end.digest()
    end.update(len(b"answer").to_bytes(8, "little") + b"answer")
    assert history.anchors_after(b"answer")[0] == chain_anchor(end.digest())
