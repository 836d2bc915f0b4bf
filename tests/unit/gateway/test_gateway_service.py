"""Health, readiness, metrics, body limit, CORS, settings and the static page of the gateway."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import Settings
from tests.support.fake_rag import FakeRagServer

QUESTION = {"query": "What is an LLM twin?"}


async def test_healthz_is_200_while_the_process_runs(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


async def test_readyz_follows_the_rag_services_health(client: httpx.AsyncClient, rag: FakeRagServer) -> None:
    serving = await client.get("/readyz")
    assert serving.status_code == 200 and serving.json()["status"] == "SERVING"
    assert serving.json()["capabilities"] == {"retrieve": "SERVING", "answer": "SERVING"}

    await rag.set_serving(False)
    not_serving = await client.get("/readyz")
    assert not_serving.status_code == 503 and not_serving.json()["status"] == "NOT_SERVING"


async def test_readyz_stays_ready_while_only_answering_is_down(client: httpx.AsyncClient, rag: FakeRagServer) -> None:
    # The LLM service is out: the RAG service can still retrieve, so the gateway stays in its Service.
    await rag.set_serving(True, answering=False)
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["capabilities"] == {"retrieve": "SERVING", "answer": "NOT_SERVING"}


async def test_readyz_is_503_when_the_rag_service_is_unreachable(serve: Any) -> None:
    app = create_app(Settings(rag_target="127.0.0.1:1", ready_timeout_s=1))
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        response = await http.get("/readyz")
    assert response.status_code == 503 and response.json()["status"] == "UNREACHABLE"


async def test_metrics_count_requests_by_route_and_status(client: httpx.AsyncClient) -> None:
    await client.post("/v1/answer", json=QUESTION)
    await client.post("/v1/answer", json={"nope": 1})
    await client.get("/healthz")

    text = (await client.get("/metrics")).text

    assert 'gateway_requests_total{method="POST",route="/v1/answer",status="200"} 1.0' in text
    assert 'gateway_requests_total{method="POST",route="/v1/answer",status="422"} 1.0' in text
    assert 'gateway_requests_total{method="GET",route="/healthz",status="200"} 1.0' in text
    assert 'gateway_request_duration_seconds_count{method="POST",route="/v1/answer"} 2.0' in text
    assert "gateway_streams_in_flight 0.0" in text


async def test_a_body_over_the_limit_is_413_before_reaching_the_rag_service(rag: FakeRagServer) -> None:
    app = create_app(Settings(rag_target=rag.target, max_body_bytes=1024))
    big = {"query": "x" * 2000}
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
            declared = await http.post("/v1/answer", json=big)

            async def chunked() -> Any:
                # No content-length: the limit is enforced while the body streams in.
                for _ in range(4):
                    yield b" " * 400

            streamed = await http.post("/v1/answer", content=chunked(), headers={"content-type": "application/json"})
            small = await http.post("/v1/answer", json=QUESTION)

    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json()["error"]["reason"] == "BODY_TOO_LARGE"
        assert response.headers["x-request-id"]
    assert small.status_code == 200
    assert len(rag.fake.requests) == 1


async def test_unknown_routes_answer_in_the_error_shape(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/nothing")
    assert response.status_code == 404
    assert response.json()["error"]["status"] == "NOT_FOUND"


async def test_cors_is_off_by_default_and_on_for_configured_origins(rag: FakeRagServer) -> None:
    preflight = {"origin": "https://twin.example", "access-control-request-method": "POST"}
    for origins, allowed in (("", False), ("https://twin.example, https://other.example", True)):
        app = create_app(Settings(rag_target=rag.target, cors_origins=origins))  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
            response = await http.options("/v1/answer", headers=preflight)
        assert (response.headers.get("access-control-allow-origin") == "https://twin.example") is allowed


def test_settings_read_gateway_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_CORS_ORIGINS", "http://a.example,http://b.example")
    monkeypatch.setenv("GATEWAY_RAG_TARGET", "rag:50051")
    monkeypatch.setenv("GATEWAY_MAX_BODY_BYTES", "2048")

    settings = Settings()

    assert settings.cors_origins == ["http://a.example", "http://b.example"]
    assert settings.rag_target == "rag:50051" and settings.max_body_bytes == 2048
    assert Settings.model_fields["port"].default == 8000


async def test_the_chat_page_and_its_assets_are_served(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200 and 'id="query"' in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert (await client.get(asset)).status_code == 200
