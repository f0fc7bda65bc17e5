"""`file_search`: ranked chunks of a tenant's vector stores, for the search endpoint and as a server-side tool.

    hits = await search_chunks(knowledge, tenant, ["vs_…"], ["launch code"], FileSearchOptions(max_num_results=5))
    tool = file_search_tool(knowledge, tenant, ["vs_…"])        # a Tool the runtime runs itself (server-side)

Filters are OpenAI's attribute filters: a comparison `{"type": "eq"|"ne"|"gt"|"gte"|"lt"|"lte"|"in"|"nin",
"key", "value"}` or a compound `{"type": "and"|"or", "filters": [...]}`. They are checked when the request
arrives (a malformed filter is a 400 naming it) and applied to the files' attributes before ranking, so
`max_num_results` counts only chunks that pass.

The tool's result is JSON, `{"queries": [...], "results": [{"file_id", "filename", "score", "text",
"attributes"}]}`: the model reads it as the tool's output, the log keeps it like any tool output (masked first
when old, recallable), and the server shows it as the `file_search_call` item's results.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .._errors import InvalidRequestError
from ..store import ChunkHit, Knowledge
from ..store._knowledge import CANDIDATES, fts_match, score_of
from ._embeddings import Embedder
from ._tools import Tool, ToolOutput

FILE_SEARCH = "file_search"
MAX_RESULTS = 50
_COMPARISONS = frozenset({"eq", "ne", "gt", "gte", "lt", "lte", "in", "nin"})
_COMPOUNDS = frozenset({"and", "or"})
_MAX_FILTER_DEPTH = 8
_PAGE = 1_000


@dataclass(frozen=True, slots=True)
class FileSearchOptions:
    max_num_results: int = 10
    filters: Mapping[str, Any] | None = None
    score_threshold: float = 0.0
    ranker: str = "auto"
    """`auto`/`default-2024-11-15`: with embeddings, vector similarity fused with the full-text score; `none`:
    with embeddings, vector similarity alone. Without embeddings every ranker is the full-text score."""


def search_options(
    max_num_results: Any = None, filters: Any = None, ranking_options: Any = None, *, param: str = ""
) -> FileSearchOptions:
    """A request's search settings, checked: every mistake is a 400 naming the field under `param`."""
    where = f"{param}." if param else ""
    count = 10 if max_num_results is None else max_num_results
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_RESULTS:
        raise InvalidRequestError(
            f"max_num_results must be an integer from 1 to {MAX_RESULTS}, got {count!r}",
            param=where + "max_num_results",
        )
    if filters is not None:
        check_filter(filters, where + "filters")
    threshold = 0.0
    ranker = "auto"
    if ranking_options is not None:
        if not isinstance(ranking_options, Mapping):
            raise InvalidRequestError("ranking_options must be an object", param=where + "ranking_options")
        ranker = ranking_options.get("ranker", "auto")
        if ranker not in ("auto", "default-2024-11-15", "none", None):
            raise InvalidRequestError(
                f"ranking_options.ranker must be 'auto', 'default-2024-11-15' or 'none', got {ranker!r}",
                param=where + "ranking_options.ranker",
            )
        given = ranking_options.get("score_threshold", 0.0)
        if isinstance(given, bool) or not isinstance(given, (int, float)) or not 0 <= given <= 1:
            raise InvalidRequestError(
                f"ranking_options.score_threshold must be a number from 0 to 1, got {given!r}",
                param=where + "ranking_options.score_threshold",
            )
        threshold = float(given)
        ranker = ranker or "auto"
    return FileSearchOptions(count, filters, threshold, ranker)


def check_filter(node: Any, param: str, depth: int = 0) -> None:
    if depth > _MAX_FILTER_DEPTH:
        raise InvalidRequestError(f"filters nest deeper than {_MAX_FILTER_DEPTH} levels", param=param)
    if not isinstance(node, Mapping):
        raise InvalidRequestError("a filter must be an object with a 'type'", param=param)
    kind = node.get("type")
    if kind in _COMPOUNDS:
        children = node.get("filters")
        if not isinstance(children, list) or not children:
            raise InvalidRequestError(f"an {kind!r} filter needs a non-empty 'filters' list", param=param + ".filters")
        for n, child in enumerate(children):
            check_filter(child, f"{param}.filters[{n}]", depth + 1)
        return
    if kind not in _COMPARISONS:
        raise InvalidRequestError(
            f"filter type must be one of {', '.join(sorted(_COMPARISONS | _COMPOUNDS))}, got {kind!r}",
            param=param + ".type",
        )
    if not isinstance(node.get("key"), str) or not node["key"]:
        raise InvalidRequestError("a comparison filter needs a 'key' (an attribute name)", param=param + ".key")
    value = node.get("value")
    if kind in ("in", "nin"):
        if not isinstance(value, list) or not all(isinstance(v, (str, int, float, bool)) for v in value):
            raise InvalidRequestError(f"an {kind!r} filter's value must be a list", param=param + ".value")
    elif not isinstance(value, (str, int, float, bool)):
        raise InvalidRequestError("a filter's value must be a string, a number or a boolean", param=param + ".value")


def matches(node: Mapping[str, Any], attributes: Mapping[str, Any]) -> bool:
    """Whether a file with these attributes passes the (checked) filter. A missing attribute passes only `ne`
    and `nin`, and an order comparison between a number and a string is false."""
    kind = node["type"]
    if kind == "and":
        return all(matches(child, attributes) for child in node["filters"])
    if kind == "or":
        return any(matches(child, attributes) for child in node["filters"])
    key, value = node["key"], node["value"]
    if key not in attributes:
        return kind in ("ne", "nin")
    have = attributes[key]
    if kind == "eq":
        return bool(have == value)
    if kind == "ne":
        return bool(have != value)
    if kind == "in":
        return have in value
    if kind == "nin":
        return have not in value
    if isinstance(have, str) != isinstance(value, str):
        return False
    try:
        return bool({"gt": have > value, "gte": have >= value, "lt": have < value, "lte": have <= value}[kind])
    except TypeError:
        return False


async def search_chunks(
    knowledge: Knowledge,
    tenant: str,
    vector_store_ids: Sequence[str],
    queries: Sequence[str],
    options: FileSearchOptions = FileSearchOptions(),
    embedder: Embedder | None = None,
) -> list[ChunkHit]:
    """The best chunks for any of `queries`, best first: each chunk once, with its best score. With an
    `embedder`, each query is embedded and the chunks ranked by vector similarity fused with the text score."""
    allowed = None
    if options.filters is not None:
        allowed = [f for vs in vector_store_ids for f in await _passing(knowledge, tenant, vs, options.filters)]
    best: dict[tuple[str, str, str], ChunkHit] = {}
    for query in queries:
        limit = options.max_num_results
        found = await knowledge.index.search(vector_store_ids, query, tenant=tenant, file_ids=allowed, limit=limit)
        if embedder is not None:
            vector = await embedder.embed_query(query)
            near = await knowledge.index.nearest(
                vector_store_ids, vector, tenant=tenant, file_ids=allowed, limit=limit * CANDIDATES
            )
            found = fuse(query, found, near) if options.ranker != "none" else near
        for hit in found:
            key = (hit.vector_store_id, hit.file_id, hit.text)
            if key not in best or best[key].score < hit.score:
                best[key] = hit
    ranked = sorted(best.values(), key=lambda h: (-h.score, h.file_id))
    return [h for h in ranked if h.score >= options.score_threshold][: options.max_num_results]


def fuse(query: str, text_hits: Sequence[ChunkHit], near: Sequence[ChunkHit]) -> list[ChunkHit]:
    """Relative score fusion: each chunk's score is the mean of its full-text score and its vector similarity.
    Both are in [0, 1], so the fused score is too and `score_threshold` keeps its meaning (reciprocal rank
    fusion would give the best chunk of an unrelated query the top score). A chunk only the vectors found gets
    its text score from its words; one only the text search found counts its similarity as 0 (it is below
    every similarity the vector search returned)."""
    terms = fts_match(query) or []
    similarity = {(h.vector_store_id, h.file_id, h.text): h.score for h in near}
    fused: dict[tuple[str, str, str], ChunkHit] = {}
    for hit in [*text_hits, *near]:
        key = (hit.vector_store_id, hit.file_id, hit.text)
        if key in fused:
            continue
        text_score = next((h.score for h in text_hits if (h.vector_store_id, h.file_id, h.text) == key), None)
        if text_score is None:
            text_score = score_of(terms, hit.text, 0.0) if terms else 0.0
        fused[key] = replace(hit, score=(text_score + similarity.get(key, 0.0)) / 2)
    return sorted(fused.values(), key=lambda h: -h.score)


async def _passing(knowledge: Knowledge, tenant: str, vector_store_id: str, node: Mapping[str, Any]) -> list[str]:
    passing: list[str] = []
    after: str | None = None
    while True:
        page = await knowledge.vector_files.list(
            vector_store_id, tenant=tenant, status="completed", after=after, limit=_PAGE, order="asc"
        )
        passing += [f.file_id for f in page if matches(node, f.attributes)]
        if len(page) < _PAGE:
            return passing
        after = page[-1].file_id


def result_of(hit: ChunkHit) -> dict[str, Any]:
    return {
        "file_id": hit.file_id,
        "filename": hit.filename,
        "score": round(hit.score, 6),
        "text": hit.text,
        "attributes": hit.attributes,
    }


def file_search_tool(
    knowledge: Knowledge,
    tenant: str,
    vector_store_ids: Sequence[str],
    options: FileSearchOptions = FileSearchOptions(),
    embedder: Embedder | None = None,
) -> Tool:
    """`file_search` over the given vector stores, as a server-side tool for a turn."""
    stores = list(vector_store_ids)

    async def file_search(queries: list[str]) -> ToolOutput:
        """Search the knowledge base (the files uploaded to the vector stores this conversation may read).
        Returns the most relevant passages with their file names; quote them in your answer.

        Args:
            queries: One or more search queries: keywords, names or a short question.
        """
        wanted = [q for q in queries if isinstance(q, str) and q.strip()][:5]
        if not wanted:
            raise InvalidRequestError("pass at least one non-empty query")
        hits = await search_chunks(knowledge, tenant, stores, wanted, options, embedder)
        output = json.dumps({"queries": wanted, "results": [result_of(h) for h in hits]}, ensure_ascii=False)
        names = sorted({h.filename for h in hits})
        summary = f"file_search {wanted!r}: {len(hits)} results" + (f" from {', '.join(names)}" if names else "")
        return ToolOutput(output, summary=summary)

    return Tool(file_search, server_side=True, tool_type=FILE_SEARCH)


def parse_output(output: str) -> tuple[list[str], list[dict[str, Any]] | None]:
    """The queries and results a `file_search` output holds (None results: it failed or is not ours)."""
    try:
        data = json.loads(output)
    except ValueError:
        return [], None
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        return [], None
    queries = [q for q in data.get("queries") or [] if isinstance(q, str)]
    return queries, [r for r in data["results"] if isinstance(r, dict)]
