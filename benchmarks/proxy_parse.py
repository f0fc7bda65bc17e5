"""`python -m benchmarks.proxy_parse`: the proxy's per-request parse + hash cost, in process, before and after the
typed decode (issue 19), for the history shape of `benchmarks.proxy` at 22, 244 and 422 KB.

"before" is the reference path (generic JSON decode, the depth walk, `parse_chat`); "after" is the route's path
(`decode_chat` from the bytes). Both then hash the history (`History`: the chain at every assistant message, what
a match looks up). CPU time per request (median of interleaved runs), so a loaded machine skews it less than wall
time; the lead runs the final tables on a quiet machine. The "after" columns resend one body (every message seen);
"growing" sends bodies that each add an answer and a new question to the one before, as a client does.
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid
from collections.abc import Callable

import msgspec

from contextfold.server.proxy._chat_decode import decode_chat, reference_body
from contextfold.server.proxy._chat_parse import parse_chat
from contextfold.server.proxy._messages_decode import decode_messages
from contextfold.server.proxy._messages_parse import parse_messages
from contextfold.server.proxy._proxy_match import History

from ._interleave import PADDING
from ._interleave import QUESTION as _QUESTION

QUESTION = _QUESTION.replace("{padding}", PADDING * 4)

_ANSWER = "answer {n}: the config default differs in the timeout field, so the comparison fails; fix the default"


def history_body(kilobytes: int, wire: str = "chat") -> bytes:
    """A Chat Completions body whose history (as `benchmarks.proxy` grows it) is about `kilobytes` long."""
    history: list[dict[str, str]] = [{"role": "system", "content": "You are a careful coding assistant."}]
    size, n = 0, 0
    while size < kilobytes * 1024:
        question, answer = QUESTION.format(n=n), _ANSWER.format(n=n)
        history += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        size += len(question) + len(answer) + 60
        n += 1
    history.append({"role": "user", "content": QUESTION.format(n=n)})
    if wire == "anthropic":  # the instructions are the system parameter there
        return msgspec.json.encode(
            {"model": "bench", "max_tokens": 1024, "system": "Be careful.", "messages": history[1:]}
        )
    return msgspec.json.encode({"model": "bench", "messages": history})


def _cpu_ms(run: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.process_time()
        run()
        times.append(time.process_time() - started)
    return 1000 * statistics.median(times)


def _growing_ms(data: bytes, wire: str, requests: int) -> float:
    """CPU per request of the route's path (decode + hash) over `requests` bodies that each add an answer and a
    new question to the one before (new text each call: nothing of the tail was seen), as a client sends them."""
    body = msgspec.json.decode(data)
    tag = uuid.uuid4().hex
    bodies = []
    for n in range(requests):
        body["messages"] += [
            {"role": "assistant", "content": _ANSWER.format(n=f"{tag} {n}")},
            {"role": "user", "content": QUESTION.format(n=f"{tag} {n}")},
        ]
        bodies.append(msgspec.json.encode(body))
    decode = decode_messages if wire == "anthropic" else decode_chat
    times = []
    for one in bodies:
        started = time.process_time()
        History(decode(one))
        times.append(time.process_time() - started)
    return 1000 * statistics.median(times)


def _runs(data: bytes, wire: str) -> dict[str, Callable[[], object]]:
    if wire == "anthropic":
        return {
            "before": lambda: parse_messages(reference_body(data)),
            "before+hash": lambda: History(parse_messages(reference_body(data))),
            "after": lambda: decode_messages(data),
            "after+hash": lambda: History(decode_messages(data)),
        }
    return {
        "before": lambda: parse_chat(reference_body(data)),
        "before+hash": lambda: History(parse_chat(reference_body(data))),
        "after": lambda: decode_chat(data),
        "after+hash": lambda: History(decode_chat(data)),
    }


def main(rounds: int = 40) -> None:
    print(
        "| wire | history | messages | before parse ms | before parse+hash ms | after parse ms | after parse+hash ms "
        "| after parse+hash, growing ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for wire, kilobytes in [(wire, size) for wire in ("chat", "anthropic") for size in (22, 244, 422)]:
        data = history_body(kilobytes, wire)
        runs = _runs(data, wire)
        results: dict[str, list[float]] = {name: [] for name in [*runs, "growing"]}
        for _ in range(5):  # interleaved, so a burst of load lands on all of them
            for name, run in runs.items():
                results[name].append(_cpu_ms(run, rounds // 5))
            results["growing"].append(_growing_ms(data, wire, rounds // 5))
        count = len(decode_chat(data).messages) if wire == "chat" else len(decode_messages(data).messages)
        cells = [f"{statistics.median(results[name]):.2f}" for name in results]
        print(f"| {wire} | {len(data) // 1024} KB | {count} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 40)
