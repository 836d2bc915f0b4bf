"""A client that goes away cancels the RAG call on every route, before the answer or the stream's first event.

The gateway runs under uvicorn (a real connection to close) with a 120 s deadline, so a call that is not cancelled
would still be running when the generous wait below gives up.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.fake_rag import FakeRag, FakeRagServer, serve_fake_rag
from tests.support.gateway import serving_gateway

QUESTION = "What is an LLM twin?"
WAIT_S = 20.0  # generous: a loaded machine is slow; the deadline the old gateway left running is 120 s

ROUTES: dict[str, tuple[str, dict[str, object]]] = {
    "answer": ("/v1/answer", {"query": QUESTION}),
    "answer-stream": ("/v1/answer/stream", {"query": QUESTION}),
    "chat": ("/v1/chat/completions", {"messages": [{"role": "user", "content": QUESTION}]}),
    "chat-stream": ("/v1/chat/completions", {"messages": [{"role": "user", "content": QUESTION}], "stream": True}),
}


@pytest.fixture
def held() -> FakeRag:
    """A fake that answers nothing until released: the reply of Answer and the first event of AnswerStream."""
    return FakeRag(hold_final=asyncio.Event(), hold_context=asyncio.Event())


@pytest.fixture
async def held_rag(held: FakeRag) -> AsyncIterator[FakeRagServer]:
    """The held fake on a loopback port."""
    async with serve_fake_rag(held) as running:
        yield running


async def wait_for(condition: object, what: str) -> None:
    """Polls `condition()` until true; fails after WAIT_S."""
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.01)


async def send_and_leave(base_url: str, path: str, body: dict[str, object], fake: FakeRag) -> None:
    """Sends the request over a raw connection, waits until it reached the RAG service, then closes it."""
    url = urlsplit(base_url)
    _reader, writer = await asyncio.open_connection(url.hostname, url.port)
    payload = json.dumps(body).encode()
    writer.write(
        f"POST {path} HTTP/1.1\r\nhost: {url.netloc}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    await writer.drain()
    await wait_for(lambda: len(fake.requests) == 1, "the request never reached the RAG service")
    writer.close()
    await writer.wait_closed()


@pytest.mark.parametrize("route", list(ROUTES))
async def test_a_client_leaving_before_the_answer_cancels_the_rag_call(
    route: str, held: FakeRag, held_rag: FakeRagServer
) -> None:
    path, body = ROUTES[route]
    async with serving_gateway(held_rag.target, request_timeout_s=120) as url:
        await send_and_leave(url, path, body, held)

        await wait_for(lambda: held.cancelled_calls == 1, "the RAG call was not cancelled when the client left")
        assert held.completed == 0 and held.deltas_sent == 0
        async with httpx.AsyncClient(base_url=url) as http:
            metrics = (await http.get("/metrics")).text
    assert "gateway_streams_in_flight 0.0" in metrics


async def test_the_answer_is_not_cancelled_while_the_client_waits(held: FakeRag, held_rag: FakeRagServer) -> None:
    async with serving_gateway(held_rag.target, request_timeout_s=120) as url, httpx.AsyncClient(base_url=url) as http:
        pending = asyncio.create_task(http.post("/v1/answer", json={"query": QUESTION}, timeout=WAIT_S))
        await wait_for(lambda: len(held.requests) == 1, "the request never reached the RAG service")
        held.hold_final.set()  # type: ignore[union-attr]
        response = await pending

    assert response.status_code == 200 and response.json()["final"]["answer"] == held.answer
    assert held.cancelled_calls == 0 and held.completed == 1
