"""Embeddings: chunks and queries as vectors, from any OpenAI-compatible `POST /v1/embeddings`.

    embedder = Embedder("http://localhost:8000/v1", "text-embedding-3-small", api_key="...")
    vectors = await embedder.embed(["first chunk", "second chunk"])   # float32 bytes, unit length, in order

Texts go in batches of `batch` per request; a failed request (refused, timed out, a 5xx or 429) is tried again
`attempts` times with a growing pause, and then raises `EmbeddingError` with a message that says what to fix.
Vectors are stored normalised, so cosine similarity is a dot product.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx2

from ..store._knowledge_vectors import pack

DEFAULT_BATCH = 64
DEFAULT_ATTEMPTS = 3
_RETRIED = frozenset({408, 409, 429, 500, 502, 503, 504})


class EmbeddingError(Exception):
    """The embeddings upstream did not give vectors; the message names the upstream and what to check."""


class Embedder:
    """An OpenAI-compatible embeddings upstream (`base_url` ends at `/v1`, as the openai SDK's does)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        batch: int = DEFAULT_BATCH,
        attempts: int = DEFAULT_ATTEMPTS,
        timeout: float = 60.0,
        backoff: float = 0.5,
    ) -> None:
        self.url = base_url.rstrip("/") + "/embeddings"
        self.model = model
        self.batch = batch
        self.attempts = attempts
        self.backoff = backoff
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx2.AsyncClient(headers=headers, timeout=timeout)

    async def close(self) -> None:
        await self._http.aclose()

    async def embed(self, texts: Sequence[str]) -> list[bytes]:
        """One vector per text, in order (none for no texts)."""
        out: list[bytes] = []
        for start in range(0, len(texts), self.batch):
            out += await self._batch(list(texts[start : start + self.batch]))
        return out

    async def embed_query(self, text: str) -> bytes:
        (vector,) = await self.embed([text])
        return vector

    async def _batch(self, texts: list[str]) -> list[bytes]:
        problem = ""
        for attempt in range(self.attempts):
            if attempt:
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                reply = await self._http.post(self.url, json={"model": self.model, "input": texts})
            except httpx2.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                continue
            if reply.status_code in _RETRIED:
                problem = f"HTTP {reply.status_code}: {reply.text[:200]}"
                continue
            if reply.status_code != 200:
                raise EmbeddingError(
                    f"the embeddings upstream {self.url} refused model {self.model!r} with HTTP "
                    f"{reply.status_code}: {reply.text[:200]}; check --embeddings-model and --embeddings-api-key"
                )
            return self._vectors(reply, len(texts))
        raise EmbeddingError(
            f"the embeddings upstream {self.url} failed {self.attempts} times ({problem}); check that it is up "
            "and --embeddings-url is right, then add the file again"
        )

    def _vectors(self, reply: httpx2.Response, count: int) -> list[bytes]:
        try:
            data = sorted(reply.json()["data"], key=lambda d: d["index"])
            vectors = [pack([float(x) for x in d["embedding"]]) for d in data]
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbeddingError(
                f"the embeddings upstream {self.url} answered without OpenAI's shape ({type(exc).__name__}: {exc}); "
                "point --embeddings-url at an OpenAI-compatible /v1"
            ) from None
        if len(vectors) != count or len({len(v) for v in vectors}) > 1 or not vectors[0]:
            raise EmbeddingError(
                f"the embeddings upstream {self.url} gave {len(vectors)} vectors for {count} texts, or of mixed "
                "sizes; point --embeddings-url at an OpenAI-compatible /v1"
            )
        return vectors
