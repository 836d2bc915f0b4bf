"""The cross-encoder reranker on a real (locally built) cross-encoder: scores, order, k, and the event loop."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rag_service.embedding import model_path
from rag_service.pipeline.rerank import CrossEncoderReranker, make_reranker
from rag_service.types import Chunk, Kind, ScoredChunk

QUERY = "How does continuous batching raise GPU throughput?"
TEXTS = [
    "Continuous batching schedules at every decode step, so finished sequences leave and new ones join.",
    "The recipe needs two eggs, flour and a pinch of salt.",
    "Static batching pads every request to the longest prompt and waits for the slowest one.",
    "Qdrant payload indexes make filtered vector search fast at scale.",
    "LoRA rank 16 was enough to capture one author's style.",
    "Our canary release sends 5% of the traffic to the new endpoint first.",
]


@dataclass(frozen=True)
class BuiltCrossEncoder:
    """The saved model's directory, and the model and tokenizer themselves (to compute expected scores)."""

    path: Path
    model: Any
    tokenizer: Any

    def scores(self, query: str, texts: list[str]) -> list[float]:
        """What the model itself says of each (query, text) pair: the sigmoid of its one logit."""
        import torch

        with torch.no_grad():
            batch = self.tokenizer([query] * len(texts), texts, padding=True, truncation=True, return_tensors="pt")
            return torch.sigmoid(self.model(**batch).logits[:, 0]).tolist()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> BuiltCrossEncoder:
    """A cross-encoder built offline: all-MiniLM-L6-v2's BERT body with a fresh, seeded one-logit head."""
    import torch
    import transformers
    from transformers import AutoTokenizer, BertForSequenceClassification

    torch.set_num_threads(1)  # 2 shared cores: one intra-op thread is the fast setting (see GUIDE)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # its load report lists the new head as missing: expected here
    torch.manual_seed(1234)
    model = BertForSequenceClassification.from_pretrained(str(model_path()), num_labels=1).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_path()))
    path = tmp_path_factory.mktemp("cross-encoder")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    transformers.logging.set_verbosity(verbosity)
    return BuiltCrossEncoder(path, model, tokenizer)


@pytest.fixture(scope="module")
def reranker(built: BuiltCrossEncoder) -> CrossEncoderReranker:
    return CrossEncoderReranker(str(built.path))


def candidate(i: int, text: str) -> ScoredChunk:
    chunk = Chunk(f"doc-{i}", Kind.ARTICLE, "elena-varga", "Elena Varga", 0, text, "T", "")
    return ScoredChunk(chunk, vector_score=1 - i / 10, score=1 - i / 10)


async def test_keeps_the_k_best_candidates_scored_by_the_model_best_first(reranker, built):
    candidates = [candidate(i, t) for i, t in enumerate(TEXTS)]
    kept = await reranker.rerank(QUERY, [0.0] * 384, candidates, 3)

    by_text = dict(zip(TEXTS, built.scores(QUERY, TEXTS), strict=True))
    assert len(kept) == 3
    assert [k.score for k in kept] == pytest.approx([by_text[k.chunk.content] for k in kept], abs=1e-4)
    assert [k.chunk.content for k in kept] == sorted(TEXTS, key=by_text.__getitem__, reverse=True)[:3]
    assert [k.score for k in kept] == sorted((k.score for k in kept), reverse=True)
    # The vector search's score is kept alongside the reranker's.
    assert all(k.vector_score == candidates[TEXTS.index(k.chunk.content)].vector_score for k in kept)


async def test_fewer_candidates_than_k_are_all_returned_and_none_gives_none(reranker):
    two = [candidate(0, TEXTS[0]), candidate(1, TEXTS[1])]
    assert len(await reranker.rerank(QUERY, [], two, 5)) == 2
    assert await reranker.rerank(QUERY, [], [], 5) == []


async def test_scoring_runs_off_the_event_loop(reranker):
    # Enough pairs that predict takes a noticeable time; a ticker on the loop must keep running meanwhile.
    candidates = [candidate(i, " ".join(TEXTS)) for i in range(12)]
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.002)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    start = time.perf_counter()
    kept = await reranker.rerank(QUERY, [], candidates, 3)
    took = time.perf_counter() - start
    done.set()
    await task
    assert len(kept) == 3
    assert len(gaps) >= 5 and max(gaps) < took / 2, (took, max(gaps), len(gaps))


def test_the_reranker_factory_needs_a_model_for_the_cross_encoder(built):
    with pytest.raises(ValueError, match="RAG_CROSS_ENCODER_MODEL"):
        make_reranker("cross-encoder", "")
    built = make_reranker("cross-encoder", str(built.path))
    assert isinstance(built, CrossEncoderReranker) and built.name == "cross-encoder"
