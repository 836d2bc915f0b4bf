"""Wiring of the RAG service: store, embedder, LLM client, reranker, tracer, servicer, health, reflection."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from llmtwin.rag.v1 import rag_service_pb2, rag_service_pb2_grpc
from rag_service import metrics
from rag_service.embedding import Embedder
from rag_service.errors import DOMAIN, StoreUnavailable
from rag_service.ingest import Ingestor
from rag_service.llm_client import LlmClient
from rag_service.pipeline.rerank import make_reranker
from rag_service.rag import Rag
from rag_service.servicer import RagServicer
from rag_service.settings import Settings
from rag_service.store import open_store
from rag_service.tracing import Tracer, make_tracer
from servekit.admission import Admission
from servekit.grpc_app import NOT_SERVING, SERVING, secured_app, watch_health
from servekit.tls import ClientTls

log = logging.getLogger(__name__)
SERVICE_NAME = rag_service_pb2.DESCRIPTOR.services_by_name["RagService"].full_name
# Health names, one per capability: SERVICE_NAME is SERVING while the replica can retrieve (the store answers),
# which is what load balancers and readiness probes watch; ANSWER_SERVICE also needs the LLM service.
ANSWER_SERVICE = f"{SERVICE_NAME}/Answer"


class RagServer:
    """The RAG service: start() binds, opens the store and loads the models; stop() drains and closes."""

    def __init__(self, settings: Settings, *, embedder: Embedder | None = None, tracer: Tracer | None = None):
        self.settings = settings
        self._embedder = embedder
        self._tracer = tracer
        self.llm_tls = ClientTls(
            settings.llm_tls,
            settings.llm_tls_ca_file,
            settings.llm_tls_cert_file,
            settings.llm_tls_key_file,
            settings.llm_tls_server_name,
        )
        self.app, self.tls = secured_app(SERVICE_NAME, DOMAIN, settings)
        self.admission = Admission(settings.max_concurrent, settings.max_queued, settings.queue_timeout_s)
        metrics.IN_FLIGHT.set_function(lambda: self.admission.in_flight)
        self.rag: Rag | None = None
        self._owns_embedder = embedder is None
        self._health_task: asyncio.Task[None] | None = None
        self._answering: bool | None = None

    async def start(self) -> int:
        """Listens first (NOT_SERVING), then loads everything; SERVING once the store and the LLM answer."""
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
        )
        self._embedder = embedder
        try:
            await store.ensure_collections()
        except StoreUnavailable as exc:  # serve anyway (NOT_SERVING): the store may come up later
            log.warning("vector store not ready; collections are created on first use", extra={"error": str(exc)})
        reranker = await asyncio.to_thread(make_reranker, s.reranker, s.cross_encoder_model, s.mmr_diversity)
        tracer = self._tracer or make_tracer(s.tracing, s.trace_sample_rate, s.opik_project or None, s.trace_buffer)
        llm = LlmClient(s.llm_target, tls=self.llm_tls, token=s.llm_auth_token)
        self.rag = Rag(s, store, embedder, llm, reranker, tracer)
        servicer = RagServicer(self.rag, Ingestor(store, embedder), self.admission)
        rag_service_pb2_grpc.add_RagServiceServicer_to_server(servicer, self.app.server)
        port = await self.app.start(s.host, s.port, await asyncio.to_thread(self.tls.grpc_credentials))
        await self.app.health.set(ANSWER_SERVICE, NOT_SERVING)
        security = {"tls": "mutual" if self.tls.mutual else self.tls.enabled, "auth": bool(s.auth_tokens)}
        log.info(
            "listening",
            extra={"address": f"{s.host}:{port}", "llm": s.llm_target, "store": s.store_backend, **security},
        )
        self._health_task = asyncio.create_task(watch_health(self.app, self.check_health, s.health_interval_s))
        return port

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

    async def stop(self) -> None:
        """NOT_SERVING, drain in-flight answers within the grace period, then close everything."""
        if self._health_task:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        await self.app.stop(self.settings.shutdown_grace_s, self.settings.shutdown_drain_s)
        if self.rag:
            await self.rag.llm.aclose()
            await self.rag.store.aclose()
            await asyncio.to_thread(self.rag.tracer.close)
        if self._owns_embedder and self._embedder:
            await self._embedder.aclose()
