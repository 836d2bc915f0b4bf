"""`python -m llm_service` as a real process, driven only through reflection with the real grpcurl."""

from __future__ import annotations

import json
import signal
import urllib.request

from tests.support.procs import free_port, grpcurl, json_stream, start_module, wait_serving


def test_reflection_only_client_lists_describes_and_streams_then_sigterm_stops_cleanly(tmp_path):
    port, metrics_port = free_port(), free_port()
    target = f"127.0.0.1:{port}"
    # no backend configuration: the embedded packaged model is the default
    proc = start_module(
        "llm_service", {"LLM_PORT": str(port), "LLM_METRICS_PORT": str(metrics_port)}, tmp_path / "llm.log"
    )
    try:
        wait_serving(target, "llmtwin.llm.v1.LlmService")

        services = grpcurl(target, "list").stdout.split()
        assert {"llmtwin.llm.v1.LlmService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} <= set(
            services
        )
        described = grpcurl(target, "describe", "llmtwin.llm.v1.LlmService").stdout
        assert "rpc GenerateStream ( .llmtwin.llm.v1.GenerateRequest ) returns ( stream" in described

        request = {
            "prompt": "Hello, my name is",
            "parameters": {"max_new_tokens": 6, "temperature": 0},
            "request_id": "grpcurl-1",
        }
        out = grpcurl(target, "llmtwin.llm.v1.LlmService/GenerateStream", data=request)
        assert out.returncode == 0, out.stderr
        messages = json_stream(out.stdout)
        assert all("token" in m for m in messages[:-1]) and len(messages) >= 2
        final = messages[-1]["final"]
        assert final["usage"]["completion_tokens"] == 6 and final["request_id"] == "grpcurl-1"
        assert final["text"] == "".join(m["token"]["text"] for m in messages[:-1])
        verbose = grpcurl("-v", target, "llmtwin.llm.v1.LlmService/Generate", data=request)
        assert "x-request-id: grpcurl-1" in verbose.stdout

        bad = grpcurl(
            target, "llmtwin.llm.v1.LlmService/Generate", data={"prompt": "x", "parameters": {"temperature": 9}}
        )
        assert "InvalidArgument" in bad.stderr and "parameters.temperature" in bad.stderr

        metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        for name in (
            "llm_requests_total",
            "llm_time_to_first_token_seconds_bucket",
            "llm_inter_token_latency_seconds_bucket",
            "llm_generated_tokens_total",
            "llm_queue_time_seconds_bucket",
            "llm_generations_in_flight",
            "llm_backend_errors_total",
        ):
            assert name in metrics
        assert 'llm_requests_total{code="INVALID_ARGUMENT",method="Generate"} 1.0' in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0
    lines = [json.loads(line) for line in (tmp_path / "llm.log").read_text().splitlines() if line.startswith("{")]
    generation = next(line for line in lines if line["msg"] == "generation" and line["request_id"] == "grpcurl-1")
    assert generation["status"] == "OK" and generation["completion_tokens"] == 6 and generation["backend"] == "embedded"
    assert any(line["msg"] == "shutting down" for line in lines)
