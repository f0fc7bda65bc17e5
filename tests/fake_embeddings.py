"""A loopback embeddings server speaking OpenAI's `POST /v1/embeddings`, with vectors made from the text.

Each word is mapped to a concept (a few words share one, as synonyms do in a real model's space) and the concept
hashed into one of `DIM` buckets: a bag of concepts. Texts about the same things score close even when they share
no word, which is what an embedding model gives and full-text search cannot.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DIM = 64
SYNONYMS = {
    "automobile": "car",
    "vehicle": "car",
    "motorcar": "car",
    "tyres": "tire",
    "tires": "tire",
    "wheels": "tire",
    "purchase": "buy",
    "acquire": "buy",
}


def embedding(text: str) -> list[float]:
    vector = [0.0] * DIM
    for word in re.findall(r"\w+", text.lower()):
        concept = SYNONYMS.get(word, word)
        bucket = int.from_bytes(hashlib.sha256(concept.encode()).digest()[:4], "big") % DIM
        vector[bucket] += 1.0
    return vector


@dataclass
class FakeEmbeddings:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    failing: bool = False
    """Answer every request 503 (an upstream that is down)."""


@contextmanager
def fake_embeddings() -> Iterator[FakeEmbeddings]:
    state = FakeEmbeddings("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            state.requests.append(body)
            if state.failing or self.path != "/v1/embeddings":
                self.send_response(503 if state.failing else 404)
                self.end_headers()
                return
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            data = [{"object": "embedding", "index": n, "embedding": embedding(t)} for n, t in enumerate(inputs)]
            usage = {"prompt_tokens": 0, "total_tokens": 0}
            out = json.dumps({"object": "list", "data": data, "model": body["model"], "usage": usage}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
