"""Ingestion: a file's bytes to text (plain, Markdown, JSON, code, HTML; PDF with the `pdf` extra), the text to
overlapping chunks, the chunks into the store's index.

Chunking follows OpenAI's `static` strategy: windows of at most `max_chunk_size_tokens` tokens (default 800), each
starting `max - overlap` tokens after the one before, so neighbours share `chunk_overlap_tokens` (default 400).
Tokens are counted as words and punctuation marks (about what a BPE tokenizer gives for English text, never
fewer), and every chunk is a slice of the original text, whitespace and all.

`Ingestor.run` drains `index.pending()`: the queue is the store's `in_progress` rows, so a file whose ingestion a
crash or a restart cut off is simply ingested again, and the chunks of one file land in one transaction.
Each round also sweeps the vector stores whose `expires_after` has passed.
With an `Embedder`, a file's chunks are embedded (in batches, each retried) before they are written with their
vectors; when the embeddings upstream still fails, the file is `failed` with a `last_error` naming the upstream
and what to check (not indexed for text only: a store searched with embeddings would silently miss it).
"""

from __future__ import annotations

import asyncio
import contextlib
import html.parser
import io
import json
import logging
import re
from collections.abc import Mapping
from typing import Any

from .._errors import InvalidRequestError, UserError
from ..store import Knowledge, VectorFile
from ._embeddings import Embedder, EmbeddingError

log = logging.getLogger("contextfold.ingest")

DEFAULT_MAX_CHUNK_TOKENS = 800
DEFAULT_CHUNK_OVERLAP_TOKENS = 400
MIN_CHUNK_TOKENS = 100
MAX_CHUNK_TOKENS = 4096
_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)
_HTML = (".html", ".htm", ".xhtml")
_SKIPPED_TAGS = frozenset({"script", "style", "head", "noscript", "template"})
_BLOCK_TAGS = frozenset(
    {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article", "pre", "table", "ul"}
)


class UnsupportedFile(Exception):
    """The file cannot be read as text: its `code` and message become the vector store file's `last_error`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def chunking_of(strategy: Mapping[str, Any] | None) -> dict[str, int]:
    """A request's `chunking_strategy` (`auto`, `static`, or none) as the two numbers the chunker takes."""
    if strategy is None or strategy.get("type") in (None, "auto"):
        return {"max_chunk_size_tokens": DEFAULT_MAX_CHUNK_TOKENS, "chunk_overlap_tokens": DEFAULT_CHUNK_OVERLAP_TOKENS}
    if strategy.get("type") != "static":
        raise InvalidRequestError(
            f"chunking_strategy.type must be 'auto' or 'static', got {strategy.get('type')!r}",
            param="chunking_strategy.type",
        )
    static = strategy.get("static")
    if not isinstance(static, Mapping):
        raise InvalidRequestError(
            "a static chunking_strategy needs 'static': {max_chunk_size_tokens, chunk_overlap_tokens}",
            param="chunking_strategy.static",
        )
    size = static.get("max_chunk_size_tokens", DEFAULT_MAX_CHUNK_TOKENS)
    overlap = static.get("chunk_overlap_tokens", DEFAULT_CHUNK_OVERLAP_TOKENS)
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_CHUNK_TOKENS <= size <= MAX_CHUNK_TOKENS:
        raise InvalidRequestError(
            f"max_chunk_size_tokens must be an integer from {MIN_CHUNK_TOKENS} to {MAX_CHUNK_TOKENS}, got {size!r}",
            param="chunking_strategy.static.max_chunk_size_tokens",
        )
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap <= size // 2:
        raise InvalidRequestError(
            f"chunk_overlap_tokens must be an integer from 0 to half of max_chunk_size_tokens ({size // 2}), "
            f"got {overlap!r}",
            param="chunking_strategy.static.chunk_overlap_tokens",
        )
    return {"max_chunk_size_tokens": size, "chunk_overlap_tokens": overlap}


def chunk_text(text: str, *, max_tokens: int, overlap: int) -> list[str]:
    """Overlapping windows of `text`, each a slice of it of at most `max_tokens` tokens."""
    spans = [match.span() for match in _TOKEN.finditer(text)]
    if not spans:
        return []
    step = max(1, max_tokens - overlap)
    chunks: list[str] = []
    start = 0
    while True:
        end = min(start + max_tokens, len(spans))
        chunks.append(text[spans[start][0] : spans[end - 1][1]])
        if end == len(spans):
            return chunks
        start += step


def extract_text(filename: str, content: bytes) -> str:
    """The file's text, by its name and what its bytes hold; `UnsupportedFile` when it has none to give."""
    lower = filename.lower()
    if lower.endswith(".pdf") or content.startswith(b"%PDF-"):
        return _pdf_text(content)
    if b"\x00" in content:
        raise UnsupportedFile("unsupported_file", f"{filename} is binary; upload text, Markdown, JSON, code or HTML")
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnsupportedFile("invalid_file", f"{filename} is not UTF-8 text: {exc}") from None
    if lower.endswith(".json"):
        try:
            json.loads(text)
        except ValueError as exc:
            raise UnsupportedFile("invalid_file", f"{filename} is not valid JSON: {exc}") from None
        return text
    if lower.endswith(_HTML):
        return _html_text(text)
    return text


def _html_text(markup: str) -> str:
    reader = _HTMLText()
    reader.feed(markup)
    reader.close()
    return re.sub(r"\n\s*\n+", "\n\n", "".join(reader.parts)).strip()


class _HTMLText(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_TAGS:
            self._skipping += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self._skipping = max(0, self._skipping - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def _pdf_text(content: bytes) -> str:
    try:
        import pypdf
    except ImportError:
        raise UnsupportedFile(
            "unsupported_file", "PDF files need the pdf extra on the server: pip install 'contextfold[pdf]'"
        ) from None
    try:
        reader = pypdf.PdfReader(io.BytesIO(content))
        return "\n\n".join(page.extract_text() or "" for page in reader.pages)
    except Exception as exc:  # pypdf raises many kinds for a damaged file
        raise UnsupportedFile("invalid_file", f"the PDF cannot be read: {type(exc).__name__}: {exc}") from None


class Ingestor:
    """Ingests what the store has queued, in the background, one file at a time (`wake` after queueing more)."""

    def __init__(self, knowledge: Knowledge, *, poll: float = 5.0, embedder: Embedder | None = None) -> None:
        self.knowledge = knowledge
        self.embedder = embedder
        """Embeds each file's chunks before they are written (None: full-text search only)."""
        self.poll = poll
        """How often to look for work nobody woke us for (another replica queued it)."""
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Forever: drain the queue, then sleep until woken or `poll` seconds pass. Cancel it to stop."""
        while True:
            try:
                await self.knowledge.index.sweep()  # expired vector stores, erased off the request path
                await self.drain()
            except Exception:  # a failing database must not end ingestion for good: try again later
                log.exception("ingestion failed; retrying in %gs", self.poll)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll)
            self._wake.clear()

    async def drain(self) -> int:
        """Ingest every queued file; returns how many were finished."""
        done = 0
        while batch := await self.knowledge.index.pending(limit=20):
            finished = 0
            for queued in batch:
                finished += await self.ingest(queued)
            done += finished
            if not finished:  # another replica holds them: leave them to it this round
                return done
        return done

    async def ingest(self, queued: VectorFile) -> bool:
        index = self.knowledge.index
        try:
            content = await self.knowledge.files.content(queued.file_id, tenant=queued.tenant)
            record = await self.knowledge.files.get(queued.file_id, tenant=queued.tenant)
        except UserError:  # the file went while it was queued: the cascade took its row too
            return False
        try:
            text = await asyncio.to_thread(extract_text, record.filename, content)
            chunks = chunk_text(
                text,
                max_tokens=queued.chunking["max_chunk_size_tokens"],
                overlap=queued.chunking["chunk_overlap_tokens"],
            )
        except UnsupportedFile as exc:
            error = {"code": exc.code, "message": str(exc)}
            return await index.finish(queued.vector_store_id, queued.file_id, chunks=None, error=error)
        except Exception as exc:  # a bug in reading this file must not hold up every file queued after it
            log.exception("ingesting %s failed", queued.file_id)
            error = {"code": "server_error", "message": f"the file could not be read: {type(exc).__name__}"}
            return await index.finish(queued.vector_store_id, queued.file_id, chunks=None, error=error)
        vectors = None
        if self.embedder is not None and chunks:
            try:
                vectors = await self.embedder.embed(chunks)
            except EmbeddingError as exc:  # retried already: the file fails, saying what to fix
                error = {"code": "server_error", "message": str(exc)}
                return await index.finish(queued.vector_store_id, queued.file_id, chunks=None, error=error)
        return await index.finish(queued.vector_store_id, queued.file_id, chunks=chunks, vectors=vectors)
