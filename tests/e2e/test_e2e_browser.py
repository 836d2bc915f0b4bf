"""The chat page in headless Chromium against the real stack: sources, a growing answer, and Stop that cancels
the generation in the LLM service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests.e2e.stack import Stack, metric_value
from tests.support.browser import CHROMIUM, LAUNCH_ARGS
from tests.support.procs import ROOT

SCREENSHOT = ROOT / "artifacts" / "e2e_chat_page.png"
CANCELLED_STREAMS = 'llm_requests_total{code="CANCELLED",method="GenerateStream"}'
FINISHED_STREAMS = 'llm_requests_total{code="OK",method="GenerateStream"}'
LAST = "#thread > .turn:last-child"  # the thread's newest turn

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (make browser)"),
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless Debian Chromium; Playwright gives every launch a fresh temporary profile."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def llm_metric(stack: Stack, sample: str) -> float:
    """One Prometheus sample of the LLM service, read without blocking the loop that drives the page."""
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(stack.llm_metrics_url)).text
    return metric_value(text, sample)


async def answer_state(page: Page) -> str:
    """The page's answer state: idle, waiting, streaming, done, stopped or error."""
    return await page.get_attribute(f"{LAST} .answer", "data-state") or ""


async def watch_it_grow(page: Page, timeout_s: float = 30) -> list[str]:
    """The answer text sampled until it has grown twice, or the answer ended ([] then)."""
    seen: list[str] = []
    deadline = asyncio.get_running_loop().time() + timeout_s
    while len(set(seen)) < 3 and asyncio.get_running_loop().time() < deadline:
        state = await answer_state(page)
        assert state != "error", await page.locator("#error").inner_text()
        if state == "done":
            return []
        text = await page.locator(f"{LAST} .answer").inner_text()
        if text and (not seen or text != seen[-1]):
            seen.append(text)
        await asyncio.sleep(0.05)
    return seen


async def test_ask_see_sources_and_tokens_then_stop_cancels_the_generation(browser: Browser, stack: Stack) -> None:
    page = await browser.new_page(viewport={"width": 1000, "height": 900})
    await page.goto(stack.gateway_url + "/")

    # No max-tokens field on the page: answers run to the RAG default of 256 new tokens, unless the model ends
    # one early (about one answer in four ends after ~16 tokens). If the model finished before Stop reached
    # it (the page already stopped, the LLM counted the stream OK), that round proves nothing: ask again.
    for _ in range(6):
        cancelled_before = await llm_metric(stack, CANCELLED_STREAMS)
        finished_before = await llm_metric(stack, FINISHED_STREAMS)
        await page.fill("#query", stack.question)  # each ask is a new turn of the thread
        await page.click("#ask")
        await page.locator(f"{LAST} .sources li").first.wait_for(timeout=30_000)
        seen = await watch_it_grow(page)
        if not seen:
            continue
        SCREENSHOT.parent.mkdir(exist_ok=True)
        await page.screenshot(path=str(SCREENSHOT), full_page=True)
        await page.click("#stop", force=True)  # a no-op when the answer ended just before: retried
        await page.wait_for_function(
            "document.querySelector('#thread > .turn:last-child .answer').dataset.state !== 'streaming'"
        )
        if await answer_state(page) != "stopped":
            continue
        for _ in range(300):  # the cancellation travels page → gateway → RAG → LLM service (up to 30 s)
            if await llm_metric(stack, CANCELLED_STREAMS) > cancelled_before:
                break
            if await llm_metric(stack, FINISHED_STREAMS) > finished_before:
                break  # the generation ended on its own first: a lost race, not a failure
            await asyncio.sleep(0.1)
        if await llm_metric(stack, CANCELLED_STREAMS) == cancelled_before + 1:
            break
        assert await llm_metric(stack, FINISHED_STREAMS) > finished_before, "Stop did not reach the LLM service"
    else:
        raise AssertionError("every answer ended before Stop could cancel it")

    sources = await page.locator(f"{LAST} .sources li").all_inner_texts()
    assert sources and all(f"{stack.author} · " in source for source in sources)
    assert any("Continuous batching on a single A10G" in source for source in sources)
    # The answer arrived token by token: ever longer prefixes of what was shown when Stop was pressed.
    stopped = await page.locator(f"{LAST} .answer").inner_text()
    assert all(stopped.startswith(text) for text in seen) and len(seen) == 3
    assert await page.locator(f"{LAST} .answer").inner_text() == stopped
    assert await page.is_enabled("#ask") and not await page.is_enabled("#stop")
    assert await page.is_hidden("#error")


async def test_a_follow_up_is_answered_from_the_previous_turns_subject(browser: Browser, stack: Stack) -> None:
    page = await browser.new_page(viewport={"width": 1000, "height": 900})
    await page.goto(stack.gateway_url + "/")
    await page.fill("#query", stack.question)  # "What does <author> think about continuous batching?"
    await page.click("#ask")
    await page.wait_for_function(
        "['done', 'stopped', 'error'].includes(document.querySelector('#thread > .turn:last-child .answer')"
        ".dataset.state)",
        timeout=120_000,
    )
    assert await answer_state(page) == "done"

    # Names no one and no subject: retrieval needs the thread's first turn to know whose writing to search.
    await page.fill("#query", "And what does she say about the GPU memory it needs?")
    await page.click("#ask")
    await page.locator(f"{LAST} .sources li").first.wait_for(timeout=60_000)
    sources = await page.locator(f"{LAST} .sources li").all_inner_texts()
    assert sources and all(f"{stack.author} · " in source for source in sources)  # her writing only
    searched = await page.locator(f"{LAST} .standalone").inner_text()
    assert searched.startswith("searched as: ") and "batching" in searched.lower()
    assert await page.locator("#thread > .turn").count() == 2
