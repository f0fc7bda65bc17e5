"""Chunk vectors as the stores keep them: float32 bytes at unit length (the layout sqlite-vec and pgvector read),
and the exact scan that compares a query's vector with them.

numpy (the `embeddings` extra) makes the scan a matrix product; without it the same sums run in Python.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence


def pack(vector: Sequence[float]) -> bytes:
    """The vector at unit length as float32 bytes (what the stores keep, as sqlite-vec and pgvector read them)."""
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return array("f", (x / norm for x in vector)).tobytes()


def unpack(blob: bytes) -> array[float]:
    return array("f", blob)


def similarities(query: bytes, blobs: Sequence[bytes]) -> list[float]:
    """The cosine similarity of `query` to each stored vector (both unit length); one of another length is -1
    (made by another embedding model: it cannot be compared)."""
    try:
        import numpy as np
    except ImportError:  # the exact scan in pure Python: slower, same answers
        mine = unpack(query)
        return [
            sum(a * b for a, b in zip(mine, unpack(b), strict=True)) if len(b) == len(query) else -1.0 for b in blobs
        ]
    q = np.frombuffer(query, dtype=np.float32)
    out = [-1.0] * len(blobs)
    same = [n for n, b in enumerate(blobs) if len(b) == len(query)]
    if same:
        matrix = np.frombuffer(b"".join(blobs[n] for n in same), dtype=np.float32).reshape(len(same), -1)
        for n, score in zip(same, (matrix @ q).tolist(), strict=True):
            out[n] = float(score)
    return out
