"""`_proxy_match.History`: the chain at every assistant position, read lazily past the latest few, equals the chain
hashed eagerly message by message (what anchors recorded before hold)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from contextfold.server.proxy._proxy_match import History, system_key


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
