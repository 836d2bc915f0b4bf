"""The chat page in headless Chromium: sources (with their evidence) before the first token, a growing answer
whose [n] markers link to the sources, cited sources marked when it is done, Stop cancels upstream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from playwright.async_api import Browser, Page, async_playwright

from llmtwin.llm.v1 import llm_service_pb2 as llm_pb2
from tests.support.browser import CHROMIUM, LAUNCH_ARGS
from tests.support.fake_rag import Failure, FakeRag

ARTIFACTS = Path(__file__).resolve().parents[3] / "artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (make browser)"),
]

# Records, in the page, when the sources list, the first evidence snippet and the answer first get content,
# and every text the answer shows as it changes.
FIRST_CONTENT_OBSERVER = """
() => {
  window.__firsts = {};
  window.__answers = [];
  const watch = (id, name, has) => new MutationObserver(() => {
    if (has() && !(name in window.__firsts)) window.__firsts[name] = performance.now();
  }).observe(document.getElementById(id), {childList: true, subtree: true, characterData: true});
  watch("sources", "sources", () => document.getElementById("sources").textContent.length > 0);
  watch("sources", "evidence", () => document.querySelector("#sources .evidence") !== null);
  watch("answer", "answer", () => document.getElementById("answer").textContent.length > 0);
  new MutationObserver(() => {
    const text = document.getElementById("answer").textContent;
    if (text && text !== window.__answers.at(-1)) window.__answers.push(text);
  }).observe(document.getElementById("answer"), {childList: true, subtree: true, characterData: true});
}
"""
# Cites source 1 twice (the second marker split across deltas, "[1," and " 7]"); 7 and 9 name no source.
CITING_ANSWER = "An LLM twin writes like you [1], trained on your own posts [1, 7] and code [9]."


@pytest.fixture
def fake() -> FakeRag:
    """A fake answering 400 words at ~50 ms each (20 s): it is still streaming when Stop is pressed, even on a
    loaded machine where the page's steps take seconds."""
    return FakeRag(answer=" ".join(f"word{i}" for i in range(400)), delay_s=0.05)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless Debian Chromium; Playwright gives every launch a fresh temporary profile."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def answer_text(page: Page) -> str:
    """The answer shown so far."""
    return await page.locator("#answer").inner_text()


async def test_answer_streams_in_after_the_sources_and_stop_cancels_it(
    browser: Browser, base_url: str, fake: FakeRag
) -> None:
    page = await browser.new_page(viewport={"width": 1000, "height": 900})
    await page.goto(base_url + "/")
    await page.evaluate(FIRST_CONTENT_OBSERVER)

    await page.fill("#query", "What is an LLM twin?")
    await page.fill("#author", "Paul Iusztin")
    await page.click("#ask")

    await page.locator("#sources li").first.wait_for()
    # One entry per document: the fake's three chunks come from two documents.
    assert await page.locator("#sources li").count() == 2
    first_source = page.locator("#sources li").first
    assert await first_source.get_attribute("id") == "source-1"
    assert await first_source.locator(".number").inner_text() == "[1]"
    assert "An end-to-end framework" in await first_source.inner_text()
    assert "Paul Iusztin · article · score 0.910 · 2 passages" in await first_source.inner_text()
    assert await first_source.locator("a").get_attribute("href") == "https://example.org/llm-twin"
    assert await first_source.locator(".evidence").inner_text() == "The LLM Twin learns to write like you."
    second_source = page.locator("#sources li").nth(1)
    assert await second_source.locator(".number").inner_text() == "[2]"
    assert "Maxime Labonne · post · score 0.550" in await second_source.inner_text()
    assert await second_source.locator(".evidence").inner_text() == "Preference alignment after supervised fine-tuning."

    # The answer grows token by token: the texts it shows are ever longer prefixes of the full answer.
    await page.wait_for_function("window.__answers.length >= 6")
    samples: list[str] = await page.evaluate("window.__answers.slice(0, 6)")
    assert samples[0] == fake.pieces()[0]
    assert all(fake.answer.startswith(sample) for sample in samples)
    lengths = [len(sample) for sample in samples]
    assert lengths == sorted(set(lengths))

    firsts = await page.evaluate("window.__firsts")
    assert firsts["sources"] < firsts["answer"] and firsts["evidence"] < firsts["answer"]
    assert fake.requests[-1].options.author == "Paul Iusztin"

    await page.screenshot(path=str(_artifact("chat_page.png")), full_page=True)
    await page.click("#stop")
    await asyncio.wait_for(fake.cancelled.wait(), timeout=10)  # generous: a loaded machine is slow

    stopped = await answer_text(page)
    await asyncio.sleep(0.3)
    assert await answer_text(page) == stopped
    assert len(stopped) < len(fake.answer)
    assert await page.get_attribute("#answer", "data-state") == "stopped"
    assert await page.is_enabled("#ask") and not await page.is_enabled("#stop")
    assert await page.is_hidden("#error")


async def test_citations_link_to_their_sources_and_cited_sources_are_marked_when_done(
    browser: Browser, base_url: str, fake: FakeRag
) -> None:
    fake.answer, fake.delay_s, fake.hold_final = CITING_ANSWER, 0.0, asyncio.Event()
    page = await browser.new_page()
    await page.goto(base_url + "/")
    await page.fill("#query", "What is an LLM twin?")
    await page.click("#ask")

    # Every delta is out; the final message is held back by the fake.
    await page.wait_for_function("t => document.getElementById('answer').innerText === t", arg=CITING_ANSWER)
    links = page.locator("#answer a.citation")
    assert await links.all_inner_texts() == ["1", "1"]
    assert [await link.get_attribute("href") for link in await links.all()] == ["#source-1", "#source-1"]
    assert await page.get_attribute("#answer", "data-state") == "streaming"
    assert await page.locator("#sources li.cited").count() == 0
    assert await page.locator("#sources .cited-label:visible").count() == 0

    fake.hold_final.set()
    await page.locator('#answer[data-state="done"]').wait_for()
    assert await page.locator("#answer").inner_text() == CITING_ANSWER  # markers keep their text
    assert await page.locator("#sources li.cited").evaluate_all("items => items.map(i => i.id)") == ["source-1"]
    assert await page.locator("#source-1 .cited-label").inner_text() == "cited"
    assert await page.is_visible("#source-1 .cited-label") and await page.is_hidden("#source-2 .cited-label")

    await links.first.click()
    assert await page.evaluate("location.hash") == "#source-1"
    await page.screenshot(path=str(_artifact("chat_page_citations.png")), full_page=True)


async def test_the_final_answer_replaces_a_stream_the_service_cut_short(
    browser: Browser, base_url: str, fake: FakeRag
) -> None:
    # The RAG's loop guard streamed a repetition before it saw it; the final event has the clean answer.
    fake.answer, fake.delay_s = "Batching pays [1]. It is a loop. It is a loop.", 0.0
    fake.final_answer, fake.finish_reason = "Batching pays [1]. It is a loop.", llm_pb2.FINISH_REASON_REPETITION
    page = await browser.new_page()
    await page.goto(base_url + "/")
    await page.fill("#query", "Does batching pay?")
    await page.click("#ask")

    await page.locator('#answer[data-state="done"]').wait_for()
    assert await answer_text(page) == "Batching pays [1]. It is a loop."
    assert await page.locator("#answer a.citation").get_attribute("href") == "#source-1"


async def test_without_sources_the_documents_are_listed_and_numbered(
    browser: Browser, base_url: str, fake: FakeRag
) -> None:
    # A RAG service older than `sources`: its prompt numbered the chunks themselves.
    fake.sources, fake.answer, fake.delay_s = (), "Fine-tuned on your code [3].", 0.0
    page = await browser.new_page()
    await page.goto(base_url + "/")
    await page.fill("#query", "What is an LLM twin?")
    await page.click("#ask")

    await page.locator('#answer[data-state="done"]').wait_for()
    assert await page.locator("#sources .number").all_inner_texts() == ["[1]", "[2]", "[3]"]
    assert await page.locator("#sources .evidence").count() == 0
    assert await page.locator("#answer a.citation").get_attribute("href") == "#source-3"


async def test_errors_are_shown_readably(browser: Browser, base_url: str, fake: FakeRag) -> None:
    fake.fail = Failure(grpc.StatusCode.INVALID_ARGUMENT, violations=[("options.author", "unknown author")])
    page = await browser.new_page()
    await page.goto(base_url + "/")
    await page.fill("#query", "Who?")
    await page.fill("#author", "Nobody")
    await page.press("#query", "Enter")

    await page.locator("#error").wait_for()
    message = await page.locator("#error").inner_text()
    assert "options.author: unknown author" in message and "INVALID_ARGUMENT" in message
    assert await page.get_attribute("#answer", "data-state") == "error"


def _artifact(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name
