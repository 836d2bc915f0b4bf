"""Post-retrieval reranking: a cross-encoder (what production uses) or MMR (offline default, no extra model)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

import numpy as np

from rag_service.types import ScoredChunk


class Reranker(Protocol):
    """Orders candidates for a query and keeps the best k."""

    name: str

    async def rerank(
        self, query: str, query_vector: Sequence[float], candidates: Sequence[ScoredChunk], k: int
    ) -> list[ScoredChunk]:
        """The k best candidates, best first, with `score` set to this reranker's score."""
        ...


class VectorOrder:
    """No reranking: the vector search's order."""

    name = "none"

    async def rerank(
        self, query: str, query_vector: Sequence[float], candidates: Sequence[ScoredChunk], k: int
    ) -> list[ScoredChunk]:
        """Top k by cosine similarity."""
        ranked = sorted(candidates, key=lambda c: c.vector_score, reverse=True)[:k]
        return [replace(c, score=c.vector_score) for c in ranked]


class MmrReranker:
    """Maximal marginal relevance: relevance to the query minus redundancy with what is already kept.

    Uses the vectors the search returned (no extra model); `diversity` in [0, 1] weighs redundancy.
    """

    name = "mmr"

    def __init__(self, diversity: float = 0.1):
        self.diversity = diversity

    async def rerank(
        self, query: str, query_vector: Sequence[float], candidates: Sequence[ScoredChunk], k: int
    ) -> list[ScoredChunk]:
        """Greedy MMR selection of k candidates."""
        if not candidates or any(c.vector is None for c in candidates):  # no vectors: the search order
            return await VectorOrder().rerank(query, query_vector, candidates, k)
        vectors = np.asarray([c.vector for c in candidates], dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12
        relevance = np.asarray([c.vector_score for c in candidates], dtype=np.float32)
        redundancy = np.zeros(len(candidates), dtype=np.float32)
        available = np.ones(len(candidates), dtype=bool)
        chosen: list[ScoredChunk] = []
        for _ in range(min(k, len(candidates))):
            scores = (1 - self.diversity) * relevance - self.diversity * redundancy
            best = int(np.argmax(np.where(available, scores, -np.inf)))
            chosen.append(replace(candidates[best], score=float(scores[best])))
            available[best] = False
            redundancy = np.maximum(redundancy, vectors @ vectors[best])
        return chosen


class CrossEncoderReranker:
    """A sentence-transformers cross-encoder (e.g. cross-encoder/ms-marco-MiniLM-L-4-v2) by path or id."""

    name = "cross-encoder"

    def __init__(self, model: str, *, max_length: int = 512):
        from sentence_transformers import CrossEncoder

        self.model_name = model
        self._model = CrossEncoder(model, max_length=max_length, device="cpu")
        self._lock = asyncio.Lock()  # one predict at a time: it uses the cores fully

    async def rerank(
        self, query: str, query_vector: Sequence[float], candidates: Sequence[ScoredChunk], k: int
    ) -> list[ScoredChunk]:
        """Scores every (query, chunk) pair off the event loop; keeps the k best."""
        if not candidates:
            return []
        pairs = [(query, c.chunk.content) for c in candidates]
        async with self._lock:
            scores = await asyncio.to_thread(self._model.predict, pairs, show_progress_bar=False)
        ranked = sorted(zip(candidates, scores, strict=True), key=lambda p: float(p[1]), reverse=True)[:k]
        return [replace(c, score=float(s)) for c, s in ranked]


def make_reranker(kind: str, model: str = "", diversity: float = 0.1) -> Reranker:
    """The configured reranker: "mmr" (default), "cross-encoder" (needs a model), or "none"."""
    if kind == "cross-encoder":
        if not model:
            raise ValueError("RAG_RERANKER=cross-encoder needs RAG_CROSS_ENCODER_MODEL (a path or a model id)")
        return CrossEncoderReranker(model)
    if kind == "none":
        return VectorOrder()
    return MmrReranker(diversity)
