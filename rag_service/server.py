"""Wiring of the RAG service: store, embedder, LLM client, reranker, tracer, servicer, health, reflection."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from llmtwin.rag.v1 import rag_service_pb2, rag_service_pb2_grpc
from rag_service import metrics
from rag_service.embedding import Embedder
from rag_service.errors import DOMAIN, StoreLocked, StoreUnavailable
from rag_service.ingestor import Ingestor
from rag_service.llm_client import LlmClient
from rag_service.opik_export import make_tracer
from rag_service.pipeline.rerank import make_reranker
from rag_service.rag import Rag
from rag_service.servicer import RagServicer
from rag_service.settings import Settings
from rag_service.store import open_store
from rag_service.tracing import Tracer
from servekit.grpc_app import NOT_SERVING, SERVING
from servekit.service import GrpcService
from servekit.settings import peer_tls, peer_token
from servekit.startup import StartupError

log = logging.getLogger(__name__)
SERVICE_NAME = rag_service_pb2.DESCRIPTOR.services_by_name["RagService"].full_name
# Health names, one per capability: SERVICE_NAME is SERVING while the replica can retrieve (the store answers),
# which is what load balancers and readiness probes watch; ANSWER_SERVICE also needs the LLM service.
ANSWER_SERVICE = f"{SERVICE_NAME}/Answer"


class RagServer(GrpcService[Settings]):
    """The RAG service: start() opens the store, loads the models and binds; stop() drains and closes."""

    def __init__(self, settings: Settings, *, embedder: Embedder | None = None, tracer: Tracer | None = None):
        super().__init__(settings, SERVICE_NAME, DOMAIN)
        self._embedder = embedder
        self._tracer = tracer
        self.llm_tls = peer_tls(settings, "llm")
        metrics.IN_FLIGHT.set_function(lambda: self.admission.in_flight)
        self.rag: Rag | None = None
        self._owns_embedder = embedder is None
        self._answering: bool | None = None

    async def open(self) -> None:
        """Opens the store, the embedder, the reranker, the tracer and the LLM client, and adds the servicer;
        health starts NOT_SERVING for both capabilities, SERVING once the store (and the LLM) answer."""
        s = self.settings
        store = open_store(
            url=s.qdrant_url or None,
            api_key=s.qdrant_api_key.get_secret_value() if s.qdrant_api_key else None,
            path=s.qdrant_path,
            backend=s.store_backend,
            collection_prefix=s.collection_prefix,
            shard_number=s.qdrant_shards,
            replication_factor=s.qdrant_replication_factor,
        )
        embedder = self._embedder or await Embedder.open(
            threads=s.embedding_threads,
            batching=s.embedding_batching,
            max_batch=s.embedding_max_batch,
            max_wait_ms=s.embedding_batch_wait_ms,
            max_pending=s.embedding_max_pending,
            runtime=s.embedding_runtime,
            cache_dir=Path(s.model_cache_dir) if s.model_cache_dir else None,
        )
        self._embedder = embedder
        try:
            await store.ensure_collections()
        except StoreLocked:  # another process holds the embedded store: waiting will not help
            raise
        except StoreUnavailable as exc:  # serve anyway (NOT_SERVING): the store may come up later
            log.warning("vector store not ready; collections are created on first use", extra={"error": str(exc)})
        reranker = await asyncio.to_thread(make_reranker, s.reranker, s.cross_encoder_model, s.mmr_diversity)
        tracer = self._tracer or make_tracer(s.tracing, s.trace_sample_rate, s.opik_project or None, s.trace_buffer)
        llm = LlmClient(s.llm_target, tls=self.llm_tls, token=peer_token(s, "llm"))
        self.rag = Rag(s, store, embedder, llm, reranker, tracer)
        servicer = RagServicer(self.rag, Ingestor(store, embedder), self.admission)
        rag_service_pb2_grpc.add_RagServiceServicer_to_server(servicer, self.app.server)
        await self.app.health.set(ANSWER_SERVICE, NOT_SERVING)

    async def check_health(self) -> bool:
        """Whether the replica can retrieve (the store answers): an LLM outage leaves it in rotation, since
        Retrieve still works. Whether it can answer (store and LLM service) is reported as ANSWER_SERVICE."""
        assert self.rag is not None
        store_ok, llm_ok = await asyncio.gather(self.rag.store.check_health(), self.rag.llm.check_health())
        answering = store_ok and llm_ok
        if answering != self._answering:
            log.info("answering capability changed", extra={"serving": answering, "store": store_ok, "llm": llm_ok})
            await self.app.health.set(ANSWER_SERVICE, SERVING if answering else NOT_SERVING)
            self._answering = answering
        return store_ok

    async def close(self) -> None:
        """Closes the LLM client, the store, the tracer and the embedder it opened."""
        if self.rag:
            await self.rag.llm.aclose()
            await self.rag.store.aclose()
            await asyncio.to_thread(self.rag.tracer.close)
        if self._owns_embedder and self._embedder:
            await self._embedder.aclose()

    def describe(self) -> dict[str, Any]:
        """The LLM target and the store, in the "listening" log line."""
        return {"llm": self.settings.llm_target, "store": self.settings.store_backend}

    def start_failure(self, error: Exception, env_prefix: str) -> StartupError | None:
        """Also: the embedded store held by another process (its WAL lock). A store server that is down is not
        a start-up failure: the service starts NOT_SERVING and waits for it."""
        if isinstance(error, StoreLocked) and self.settings.store_backend == "edge":
            path = self.settings.qdrant_path
            return StartupError(f"cannot open the store at {path} ({env_prefix}QDRANT_PATH): {error}")
        return super().start_failure(error, env_prefix)
