"""The RAG pipeline in this process, for the evaluations: a temporary embedded store with the corpus ingested,
the embedder, and a client of an LLM service (the embedded SmolLM2 one started here when no target is given)."""

from __future__ import annotations

import tempfile
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass

from rag_service.embedding import Embedder
from rag_service.ingestor import Ingestor
from rag_service.llm_client import LlmClient
from rag_service.settings import Settings
from rag_service.store import VectorStore, open_store
from rag_service.types import Document, IngestReport


@dataclass
class Pipeline:
    """What a Rag is built from, and how the corpus went in."""

    store: VectorStore
    embedder: Embedder
    llm: LlmClient
    report: IngestReport
    ingest_s: float


async def open_pipeline(
    stack: AsyncExitStack, settings: Settings, documents: list[Document], llm_target: str, llm_threads: int
) -> Pipeline:
    """Opens everything on `stack` (closed with it): the store, the embedder on the settings' runtime, the corpus
    ingested, and the LLM client."""
    tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="rag-pipeline-"))
    store = open_store(path=tmp, backend="edge")
    stack.push_async_callback(store.aclose)
    runtime = settings.embedding_runtime
    embedder = await Embedder.open(threads=settings.embedding_threads, batching=True, runtime=runtime)
    stack.push_async_callback(embedder.aclose)
    await store.ensure_collections()
    t0 = time.perf_counter()
    report = await Ingestor(store, embedder).ingest(documents)
    ingest_s = time.perf_counter() - t0
    if not llm_target:
        from tests.support.llm import running_llm  # the embedded SmolLM2 backend, in this process

        llm_target = (await stack.enter_async_context(running_llm(n_threads=llm_threads))).target
    llm = LlmClient(llm_target)
    stack.push_async_callback(llm.aclose)
    return Pipeline(store, embedder, llm, report, ingest_s)
