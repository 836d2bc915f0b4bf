"""The embedder: the real all-MiniLM-L6-v2 model, off the event loop, micro-batched across callers."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rag_service.embedding import Embedder, model_path
from rag_service.onnx_model import ensure_exported, exported_path

SENTENCES = [
    "Vector databases index embeddings for similarity search.",
    "Qdrant stores points with payloads and searches them by cosine similarity.",
    "The recipe needs two eggs, flour and a pinch of salt.",
    "Streaming gRPC keeps the first token latency low.",
    "A short one.",
    "Large language models generate text one token at a time.",
]


@pytest.fixture(scope="module")
def embedder() -> Iterator[Embedder]:
    e = Embedder(threads=1, batching=True, max_batch=32, max_wait_ms=2)
    yield e
    e.close()


@pytest.fixture(scope="module")
def unbatched() -> Iterator[Embedder]:
    e = Embedder(threads=1, batching=False)
    yield e
    e.close()


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


async def test_vectors_are_384_dimensional_and_unit_length(embedder: Embedder) -> None:
    vectors = await embedder.embed(SENTENCES)
    assert embedder.dimension == 384
    assert len(vectors) == len(SENTENCES)
    for v in vectors:
        assert len(v) == 384
        assert math.sqrt(sum(x * x for x in v)) == pytest.approx(1.0, abs=1e-4)


async def test_similar_texts_are_closer_than_unrelated_ones(embedder: Embedder) -> None:
    query, related, unrelated = await embedder.embed(
        ["How does similarity search over embeddings work?", SENTENCES[0], SENTENCES[2]]
    )
    assert cosine(query, related) > cosine(query, unrelated) + 0.2


async def test_concurrent_calls_share_encode_batches(embedder: Embedder) -> None:
    before = embedder.stats.batches, embedder.stats.requests
    results = await asyncio.gather(*(embedder.embed([s]) for s in SENTENCES))
    batches = embedder.stats.batches - before[0]
    assert embedder.stats.requests - before[1] == len(SENTENCES)
    # Requests queue up while a batch encodes, so at worst the first goes alone and the rest together.
    assert 1 <= batches <= 2
    assert [len(r) for r in results] == [1] * len(SENTENCES)


async def test_batched_and_unbatched_results_are_the_same(embedder: Embedder, unbatched: Embedder) -> None:
    batched = await asyncio.gather(*(embedder.embed([s]) for s in SENTENCES))
    before = unbatched.stats.batches
    alone = await asyncio.gather(*(unbatched.embed([s]) for s in SENTENCES))
    assert unbatched.stats.batches - before == len(SENTENCES)  # one encode per call
    for b, a in zip(batched, alone, strict=True):
        # Padding to the batch's longest text changes float rounding only.
        assert b[0] == pytest.approx(a[0], abs=1e-5)


async def test_each_caller_gets_its_own_vectors_back(embedder: Embedder) -> None:
    expected = await embedder.embed(SENTENCES)
    got = await asyncio.gather(embedder.embed(SENTENCES[:2]), embedder.embed(SENTENCES[2:]))
    for e, g in zip(expected, got[0] + got[1], strict=True):
        assert g == pytest.approx(e, abs=1e-5)


async def test_a_cancelled_caller_does_not_disturb_the_others(embedder: Embedder) -> None:
    doomed = asyncio.create_task(embedder.embed(["cancel me"]))
    survivor = asyncio.create_task(embedder.embed(["keep me"]))
    await asyncio.sleep(0)
    doomed.cancel()
    (vector,) = await survivor
    assert len(vector) == 384
    with pytest.raises(asyncio.CancelledError):
        await doomed


async def test_the_event_loop_keeps_running_while_encoding(embedder: Embedder) -> None:
    texts = [f"{s} ({i})" for i in range(8) for s in SENTENCES]
    gaps: list[float] = []

    async def tick() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    started = time.perf_counter()
    await embedder.embed(texts)
    elapsed = time.perf_counter() - started
    ticker.cancel()
    # The loop kept ticking during the encode, not after it.
    assert len(gaps) >= 3
    assert max(gaps) < max(elapsed / 2, 0.05)


async def test_empty_input_gives_no_vectors(embedder: Embedder) -> None:
    assert await embedder.embed([]) == []


async def test_tokenizer_counts_wordpiece_tokens_without_truncation(embedder: Embedder) -> None:
    ids = embedder.tokenizer.encode("word " * 400, add_special_tokens=False).ids
    assert len(ids) == 400


async def test_a_closed_embedder_refuses_work() -> None:
    e = Embedder(batching=False)
    await e.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await e.embed(["late"])


async def test_the_batching_queue_is_bounded_and_waiting_callers_still_get_their_vectors() -> None:
    bounded = Embedder(threads=1, batching=True, max_batch=4, max_wait_ms=2, max_pending=6)
    try:
        texts = [[f"sentence {i} about embeddings", f"another sentence {i}"] for i in range(30)]
        results = await asyncio.gather(*(bounded.embed(t) for t in texts))
        # 60 texts asked at once: never more than 6 queued; every caller got its own two vectors.
        assert 2 <= bounded.stats.peak_pending <= 6
        assert bounded.stats.texts == 60
        alone = await bounded.embed(texts[17])
        assert [round(x, 4) for x in results[17][1]] == [round(x, 4) for x in alone[1]]
    finally:
        bounded.close()


async def test_onnx_runtime_gives_the_vectors_of_sentence_transformers_on_torch(tmp_path: Path) -> None:
    onnx = Embedder(threads=1, batching=False, runtime="onnx", cache_dir=tmp_path)
    torch = Embedder(threads=1, batching=False, runtime="torch")
    try:
        texts = [*SENTENCES, "short", "a much longer sentence " * 80]  # the last is cut at 256 tokens by both
        got, expected = await onnx.embed(texts), await torch.embed(texts)
        assert [round(cosine(a, b), 4) for a, b in zip(got, expected, strict=True)] == [1.0] * len(texts)
    finally:
        onnx.close()
        torch.close()


def test_the_export_is_cached_under_a_name_derived_from_the_weights(tmp_path: Path) -> None:
    path = ensure_exported(model_path(), tmp_path)
    written = path.stat().st_mtime_ns
    assert ensure_exported(model_path(), tmp_path) == path == exported_path(model_path(), tmp_path)
    assert path.stat().st_mtime_ns == written  # not exported again
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


def test_an_unknown_runtime_is_refused() -> None:
    with pytest.raises(ValueError, match="onnx, onnx-int8 or torch"):
        Embedder(runtime="tensorflow")


async def test_int8_vectors_stay_close_to_fp32(tmp_path: Path) -> None:
    fp32 = Embedder(threads=1, batching=False, runtime="onnx", cache_dir=tmp_path)
    int8 = Embedder(threads=1, batching=False, runtime="onnx-int8", cache_dir=tmp_path)
    try:
        close = [cosine(a, b) for a, b in zip(await int8.embed(SENTENCES), await fp32.embed(SENTENCES), strict=True)]
        assert min(close) > 0.95  # measured here: >= 0.966; retrieval figures in docs/evaluation.md
    finally:
        fp32.close()
        int8.close()
