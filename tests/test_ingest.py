"""Ingestion's text extraction and OpenAI-style static chunking."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contextfold._errors import InvalidRequestError
from contextfold.runtime._ingest import Ingestor, UnsupportedFile, chunk_text, chunking_of, extract_text

TOKEN = re.compile(r"\w+|[^\w\s]")


@given(
    words=st.lists(st.from_regex(r"[a-z]{1,8}[.,]?", fullmatch=True), max_size=400),
    size=st.integers(2, 60),
    data=st.data(),
)
def test_chunks_are_slices_within_the_size_and_overlap_their_neighbours(
    words: list[str], size: int, data: st.DataObject
) -> None:
    overlap = data.draw(st.integers(0, size // 2))
    text = " ".join(words)
    chunks = chunk_text(text, max_tokens=size, overlap=overlap)
    tokens = TOKEN.findall(text)
    assert bool(chunks) == bool(tokens)
    for chunk in chunks:
        assert chunk in text
        assert len(TOKEN.findall(chunk)) <= size
    if chunks:  # every token is in some chunk: the last chunk ends the text, and they advance size - overlap
        assert TOKEN.findall(chunks[-1])[-1] == tokens[-1]
        assert TOKEN.findall(chunks[0]) == tokens[: len(TOKEN.findall(chunks[0]))]
    for before, after in itertools.pairwise(chunks):
        shared = TOKEN.findall(before)[size - overlap :]
        assert TOKEN.findall(after)[: len(shared)] == shared


def test_the_defaults_are_openais_and_bad_static_settings_are_refused() -> None:
    assert chunking_of(None) == {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400}
    assert chunking_of({"type": "auto"}) == chunking_of(None)
    custom = {"type": "static", "static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 0}}
    assert chunking_of(custom) == {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 0}
    for wrong in (
        {"type": "static", "static": {"max_chunk_size_tokens": 99, "chunk_overlap_tokens": 0}},
        {"type": "static", "static": {"max_chunk_size_tokens": 4097, "chunk_overlap_tokens": 0}},
        {"type": "static", "static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 101}},
        {"type": "semantic"},
    ):
        with pytest.raises(InvalidRequestError):
            chunking_of(wrong)


def test_text_is_extracted_from_markdown_json_code_and_html() -> None:
    assert extract_text("a.md", b"# Title\nbody") == "# Title\nbody"
    assert extract_text("a.py", b"def f():\n    return 1\n") == "def f():\n    return 1\n"
    assert extract_text("a.json", b'{"k": "v"}') == '{"k": "v"}'
    html = b"<html><head><title>t</title></head><body><h1>Head</h1><p>One &amp; two</p><script>x()</script></body>"
    assert extract_text("a.html", html) == "Head\n\nOne & two"
    for name, content, code in (
        ("a.bin", b"\x00\x01", "unsupported_file"),
        ("a.json", b"{", "invalid_file"),
        ("a.txt", b"\xff\xfe\xfd", "invalid_file"),
    ):
        with pytest.raises(UnsupportedFile) as failed:
            extract_text(name, content)
        assert failed.value.code == code


def tiny_pdf(text: str) -> bytes:
    """A one-page PDF showing `text` in Helvetica, with a correct cross-reference table."""
    stream = f"BT /F1 24 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_pdf_text_is_extracted_with_the_pdf_extra() -> None:
    assert "launch code is 7741" in extract_text("brief.pdf", tiny_pdf("The launch code is 7741"))
    with pytest.raises(UnsupportedFile) as broken:
        extract_text("broken.pdf", b"%PDF-1.4\nnot really a pdf")
    assert broken.value.code == "invalid_file"


async def test_a_file_that_breaks_the_reader_fails_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from contextfold.runtime import _ingest
    from contextfold.store import SQLiteStore

    store = await SQLiteStore.open(tmp_path / "k.db")
    try:
        knowledge = store.knowledge
        bad = await knowledge.files.put("t", "bad.txt", "assistants", b"breaks the reader")
        good = await knowledge.files.put("t", "good.txt", "assistants", b"fine words")
        vs = await knowledge.vector_stores.create("t", name=None, metadata={}, data={})
        chunking = chunking_of(None)
        await knowledge.vector_files.add(vs.id, [bad.id, good.id], tenant="t", attributes={}, chunking=chunking)
        real = _ingest.extract_text

        def flaky(filename: str, content: bytes) -> str:
            if filename == "bad.txt":
                raise RuntimeError("a bug")
            return real(filename, content)

        monkeypatch.setattr(_ingest, "extract_text", flaky)
        assert await Ingestor(knowledge).drain() == 2
        failed = await knowledge.vector_files.get(vs.id, bad.id, tenant="t")
        assert failed.status == "failed"
        assert (failed.last_error or {}).get("code") == "server_error"
        assert (await knowledge.vector_files.get(vs.id, good.id, tenant="t")).status == "completed"
    finally:
        await store.close()
