"""llama.cpp's own HTTP server, run in-process by xllamacpp on a loopback port, with the packaged model."""

from __future__ import annotations

from typing import Any

import httpx

from llm_service.backends.embedded import packaged_model_path


class LlamaServer:
    """A real OpenAI-compatible server (llama.cpp's): /v1/chat/completions, /v1/completions, /tokenize,
    /apply-template, /props, /health, and /metrics, which tells tests what the model generated."""

    def __init__(self, *, n_parallel: int = 2, ctx_per_slot: int = 2048) -> None:
        self._n_parallel = n_parallel
        self._ctx_per_slot = ctx_per_slot
        self._server: Any = None
        self.url = ""

    def start(self) -> str:
        """Load the model and serve on a free loopback port; returns the API base URL (ending in /v1)."""
        import xllamacpp

        params = xllamacpp.CommonParams()
        params.model.path = str(packaged_model_path())
        params.n_parallel = self._n_parallel
        params.n_ctx = self._ctx_per_slot * self._n_parallel
        params.cpuparams.n_threads = 1
        params.cpuparams_batch.n_threads = 1
        params.warmup = False
        params.verbosity = -1
        params.endpoint_metrics = True
        params.hostnames = ["127.0.0.1"]
        params.port = 0  # any free port
        self._server = xllamacpp.Server(params)
        self.root = self._server.listening_address
        self.url = f"{self.root}/v1"
        return self.url

    def metrics(self) -> dict[str, float]:
        """llama.cpp's Prometheus counters and gauges, by name."""
        text = httpx.get(f"{self.root}/metrics", timeout=10).text
        return {
            line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line and not line.startswith("#")
        }

    def produced(self) -> int:
        """Tokens generated since start, cancelled generations included."""
        return int(self.metrics()["llamacpp:tokens_predicted_total"])

    def idle(self) -> bool:
        """No request is being processed."""
        return self.metrics()["llamacpp:requests_processing"] == 0

    def stop(self) -> None:
        """Free the model."""
        self._server = None
