"""Embedded vector stores compared: qdrant-edge vs qdrant-client local mode, through our adapters.

10k random unit vectors (384-d) by 20 authors; upsert time, then per-query latency of a search filtered on
one author (and unfiltered). Also the engine's raw query time, to show what the adapter's thread hop costs.

    .venv/bin/python bench/store_bench.py [--points 10000] [--queries 200] [--dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from rag_service.store import VectorStore, open_store
from rag_service.types import Chunk, Kind, SearchFilter

AUTHORS = 20
BATCH = 256


def chunks_and_vectors(n: int, seed: int = 0) -> tuple[list[Chunk], list[list[float]]]:
    """n article chunks by AUTHORS authors, with random unit vectors."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    chunks = [
        Chunk(f"doc-{i // 4}", Kind.ARTICLE, f"a{i % AUTHORS}", f"Author {i % AUTHORS}", i % 4, "lorem ipsum " * 20)
        for i in range(n)
    ]
    return chunks, vectors.tolist()


def queries(n: int, seed: int = 1) -> list[list[float]]:
    """n random unit query vectors."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((n, 384)).astype(np.float32)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).tolist()


async def timed(search: Callable[[int, list[float]], Awaitable[object]], vectors: list[list[float]]) -> list[float]:
    """Latency in ms of each search, run one after the other."""
    out = []
    for i, v in enumerate(vectors):
        start = time.perf_counter()
        await search(i, v)
        out.append((time.perf_counter() - start) * 1000)
    return out


def p(values: list[float], q: float) -> float:
    """The q-th percentile."""
    return float(np.percentile(values, q))


async def bench_store(
    store: VectorStore, n_queries: int, data: tuple[list[Chunk], list[list[float]]]
) -> dict[str, Any]:
    """Upsert all points in batches, then time filtered and unfiltered searches."""
    chunks, vectors = data
    await store.ensure_collections()
    start = time.perf_counter()
    for i in range(0, len(chunks), BATCH):
        await store.upsert(chunks[i : i + BATCH], vectors[i : i + BATCH])
    upsert_s = time.perf_counter() - start
    qs = queries(n_queries)

    async def filtered(i: int, v: list[float]) -> object:
        return await store.search(Kind.ARTICLE, v, 5, SearchFilter(author_id=f"a{i % AUTHORS}"))

    async def unfiltered(i: int, v: list[float]) -> object:
        return await store.search(Kind.ARTICLE, v, 5)

    timings = {"filtered": await timed(filtered, qs), "unfiltered": await timed(unfiltered, qs)}
    assert await store.count(Kind.ARTICLE) == len(chunks)
    await store.aclose()
    return {"upsert_s": upsert_s, **timings}


def raw_edge_filtered(path: Path, n_queries: int) -> list[float]:
    """The engine's own filtered query time, called directly (no thread hop, no conversion)."""
    shard = qe.EdgeShard.load(str(path / "articles"))
    out: list[float] = []
    for _ in range(2):  # the first pass warms the freshly loaded shard; keep the second
        out.clear()
        for i, v in enumerate(queries(n_queries)):
            match = qe.Filter(must=[qe.FieldCondition("author_id", match=qe.MatchValue(f"a{i % AUTHORS}"))])
            request = qe.QueryRequest(limit=5, query=qe.Query.Nearest(v), filter=match, with_payload=True)
            start = time.perf_counter()
            shard.query(request)
            out.append((time.perf_counter() - start) * 1000)
    shard.close()
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--client-queries", type=int, default=50, help="local mode is slow: fewer queries")
    parser.add_argument("--dir", default=None, help="where the stores are written (default: a temp dir)")
    args = parser.parse_args()
    root = Path(args.dir or tempfile.mkdtemp(prefix="store-bench-"))
    data = chunks_and_vectors(args.points)
    try:
        edge = await bench_store(open_store(path=str(root / "edge"), backend="edge"), args.queries, data)
        raw = raw_edge_filtered(root / "edge", args.queries)
        local = await bench_store(open_store(path=str(root / "local"), backend="client"), args.client_queries, data)
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)

    print(f"{args.points} points, 384-d, {AUTHORS} authors; search limit 5; latencies in ms")
    header = f"{'store':<28}{'upsert s':>9}{'filt p50':>10}{'filt p99':>10}{'all p50':>10}{'all p99':>10}"
    print(header)
    print("-" * len(header))
    for name, r in (("qdrant-edge (EdgeStore)", edge), ("qdrant-client local (path)", local)):
        print(
            f"{name:<28}{r['upsert_s']:>9.2f}{p(r['filtered'], 50):>10.2f}{p(r['filtered'], 99):>10.2f}"
            f"{p(r['unfiltered'], 50):>10.2f}{p(r['unfiltered'], 99):>10.2f}"
        )
    hop = statistics.median(edge["filtered"]) - statistics.median(raw)
    print(f"{'qdrant-edge raw engine call':<28}{'':>9}{p(raw, 50):>10.2f}{p(raw, 99):>10.2f}")
    print(f"adapter overhead (thread hop + conversion), median: {hop:.3f} ms per query")


if __name__ == "__main__":
    asyncio.run(main())
