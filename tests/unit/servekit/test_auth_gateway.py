"""The gateway's bearer-token check and CORS defaults, in process against a FakeRag on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
import openai
import pytest
from fastapi import FastAPI

from gateway.app import create_app
from gateway.settings import Settings
from tests.support.fake_rag import serve_fake_rag

TOKEN = "gw-token-1c9e"
BODY = {"query": "What is a KV cache?"}
Client = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@asynccontextmanager
async def _client(**settings: object) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_fake_rag() as rag:
        app: FastAPI = create_app(Settings(rag_target=rag.target, request_timeout_s=10, **settings))  # type: ignore[arg-type]
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http:
                yield http


@pytest.fixture
def client() -> Client:
    """`async with client(**settings) as http`: an in-process gateway in front of a FakeRag."""
    return _client


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_api_calls_without_a_valid_token_get_401_in_the_gateways_error_shape(client: Client) -> None:
    async with client(auth_tokens=f"{TOKEN},second") as http:
        missing = await http.post("/v1/answer", json=BODY)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        assert missing.headers["x-request-id"]
        error = missing.json()["error"]
        assert error["code"] == 401 and error["status"] == "UNAUTHENTICATED" and error["reason"] == "MISSING_TOKEN"
        assert "Bearer" in error["message"]

        wrong = await http.post("/v1/answer", json=BODY, headers=_bearer("guess"))
        assert wrong.status_code == 401 and wrong.json()["error"]["reason"] == "INVALID_TOKEN"
        assert wrong.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        assert "guess" not in wrong.text
        basic = await http.post("/v1/answer", json=BODY, headers={"authorization": "Basic Z3Vlc3M="})
        assert basic.status_code == 401 and basic.json()["error"]["reason"] == "BAD_SCHEME"

        for token in (TOKEN, "second"):
            ok = await http.post("/v1/answer", json=BODY, headers=_bearer(token))
            assert ok.status_code == 200 and ok.json()["final"]["answer"]
        streamed = await http.post("/v1/answer/stream", json=BODY, headers=_bearer(TOKEN))
        assert streamed.status_code == 200 and "event: done" in streamed.text
        assert (await http.post("/v1/answer/stream", json=BODY)).status_code == 401

        metrics = await http.get("/metrics")
        assert metrics.status_code == 401
        metrics = await http.get("/metrics", headers=_bearer(TOKEN))
        assert 'status="401"' in metrics.text  # refusals are counted like any response


async def test_page_assets_docs_and_health_stay_open(client: Client) -> None:
    async with client(auth_tokens=TOKEN) as http:
        for path in ("/", "/static/app.js", "/openapi.json", "/docs", "/healthz", "/readyz"):
            assert (await http.get(path)).status_code == 200, path
    async with client(auth_tokens=TOKEN, auth_open_health=False) as http:
        assert (await http.get("/healthz")).status_code == 401
        assert (await http.get("/readyz", headers=_bearer(TOKEN))).status_code == 200


async def test_openai_sdk_sends_its_api_key_as_the_bearer_token(client: Client) -> None:
    async with client(auth_tokens=TOKEN) as http:

        def sdk(key: str) -> openai.AsyncOpenAI:
            return openai.AsyncOpenAI(base_url="http://gateway.test/v1", api_key=key, http_client=http, max_retries=0)

        messages = [{"role": "user", "content": "What is a KV cache?"}]
        completion = await sdk(TOKEN).chat.completions.create(model="llm-twin", messages=messages)  # type: ignore[arg-type]
        assert completion.choices[0].message.content
        stream = await sdk(TOKEN).chat.completions.create(model="llm-twin", messages=messages, stream=True)  # type: ignore[arg-type]
        assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert [m.id async for m in sdk(TOKEN).models.list()] == ["llm-twin"]

        with pytest.raises(openai.AuthenticationError) as refused:
            await sdk("sk-wrong").chat.completions.create(model="llm-twin", messages=messages)  # type: ignore[arg-type]
        body = refused.value.body
        assert isinstance(body, dict) and body["type"] == "authentication_error" and body["code"] == "INVALID_TOKEN"
        assert "sk-wrong" not in str(refused.value)


async def test_without_tokens_everything_answers_as_before(client: Client) -> None:
    async with client() as http:
        assert (await http.post("/v1/answer", json=BODY)).status_code == 200
        assert (await http.get("/metrics")).status_code == 200


async def test_cors_is_closed_unless_origins_are_configured(client: Client) -> None:
    preflight = {
        "origin": "https://evil.example",
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization,content-type",
    }
    async with client() as http:
        assert Settings().cors_origins == []
        simple = await http.post("/v1/answer", json=BODY, headers={"origin": "https://evil.example"})
        assert simple.status_code == 200 and "access-control-allow-origin" not in simple.headers
        options = await http.options("/v1/answer", headers=preflight)
        assert "access-control-allow-origin" not in options.headers
    async with client(cors_origins="https://chat.example", auth_tokens=TOKEN) as http:
        allowed = await http.options("/v1/answer", headers={**preflight, "origin": "https://chat.example"})
        assert allowed.status_code == 200  # preflights carry no token; CORS answers them before auth
        assert allowed.headers["access-control-allow-origin"] == "https://chat.example"
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        refused = await http.post("/v1/answer", json=BODY, headers={"origin": "https://chat.example"})
        assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == "https://chat.example"
        other = await http.options("/v1/answer", headers=preflight)
        assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
