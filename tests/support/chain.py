"""The whole chain (LLM service on echo, RAG service, gateway) served from a background thread, for sync tests.

Property-based tests (hypothesis, schemathesis) are synchronous; they call the services with blocking
clients while the services run on their own event loop in a daemon thread:

    with ChainInThread(documents) as chain:
        grpc.insecure_channel(chain.rag_target) ...; requests.post(chain.gateway_url + "/v1/answer", ...)
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType

from llm_service.backends.echo import EchoBackend
from llmtwin.rag.v1 import rag_service_pb2 as pb
from rag_service.embedding import Embedder
from tests.support.gateway import serving_gateway
from tests.support.llm import running_llm
from tests.support.rag import running_rag

STARTUP_TIMEOUT_S = 120.0


class ChainInThread:
    """LLM, RAG (in-memory store with `documents`) and gateway on loopback ports, run by a background thread."""

    def __init__(self, documents: list[pb.Document], **gateway_settings: object) -> None:
        self._documents = documents
        self._gateway_settings = gateway_settings
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="chain", daemon=True)
        self.llm_target = self.rag_target = self.gateway_url = ""

    def __enter__(self) -> ChainInThread:
        self._thread.start()
        if not self._ready.wait(STARTUP_TIMEOUT_S):
            raise TimeoutError("the chain did not start")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=60)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # reported to the thread that waits in __enter__
            self._error = error
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        embedder = await Embedder.open(threads=1)
        try:
            async with (
                running_llm(EchoBackend()) as llm,
                running_rag(llm.target, embedder) as rag,
                serving_gateway(f"127.0.0.1:{rag.port}", **self._gateway_settings) as url,
            ):
                await rag.ingest(self._documents)
                self.llm_target, self.rag_target, self.gateway_url = llm.target, f"127.0.0.1:{rag.port}", url
                self._ready.set()
                await self._stop.wait()
        finally:
            await embedder.aclose()
