"""BM25 sparse vectors: one tokenisation (qdrant-edge's built-in BM25 embedder) for ingestion and queries, on
both store adapters. Qdrant multiplies each query term by its IDF (the collection's `Modifier.IDF`)."""

from __future__ import annotations

from functools import cache

import qdrant_edge as qe

# The sparse vector's name in every collection (the dense one is the unnamed default vector).
SPARSE_VECTOR = "bm25"
# Fixed forever, like the point ids: stored document weights depend on them. avg_len is in BM25 tokens
# (stop words removed, stemmed): chunks of at most 200 model tokens give about 90 (docs/evaluation.md).
_K = 1.2
_B = 0.75
_AVG_LEN = 90.0


@cache
def _model() -> qe.Bm25:
    return qe.Bm25(qe.Bm25Config(k=_K, b=_B, avg_len=_AVG_LEN, language="english"))


def document_vector(text: str) -> tuple[list[int], list[float]]:
    """A chunk's BM25 vector: (term ids, saturated and length-normalised term frequencies)."""
    vector = _model().embed_document(text)
    return list(vector.indices), list(vector.values)


def query_vector(text: str) -> tuple[list[int], list[float]]:
    """A query's BM25 vector: weight 1 per distinct term (the store applies the IDF)."""
    vector = _model().embed_query(text)
    return list(vector.indices), list(vector.values)
