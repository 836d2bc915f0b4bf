"""The chat page in headless Chromium: a thread of turns, each with its sources (with their evidence) before the first
token, a growing answer whose [n] markers link to that turn's sources, cited sources marked when it is done; Stop
cancels upstream; follow-ups carry the thread as history, which survives a reload until "New chat"; answers with a
trace id can be rated."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from playwright.async_api import Browser, Page, Route, async_playwright

from llmtwin.llm.v1 import llm_service_pb2 as llm_pb2
from llmtwin.rag.v1 import rag_service_pb2 as rag_pb2
from tests.support.browser import CHROMIUM, LAUNCH_ARGS
from tests.support.fake_rag import Failure, FakeRag

ARTIFACTS = Path(__file__).resolve().parents[3] / "artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (make browser)"),
]

# Records, in the page, when the sources list, the first evidence snippet and the answer first get content,
# and every text the answer shows as it changes.
# Records, in the page, when the first turn's sources list, its first evidence snippet and its answer first get
# content, and every text that answer shows as it changes.
FIRST_CONTENT_OBSERVER = """
() => {
  window.__firsts = {};
  window.__answers = [];
  const turn = () => document.getElementById("turn-0");
  const text = (selector) => (turn() && turn().querySelector(selector).textContent) || "";
  const watch = (name, has) => new MutationObserver(() => {
    if (has() && !(name in window.__firsts)) window.__firsts[name] = performance.now();
  }).observe(document.getElementById("thread"), {childList: true, subtree: true, characterData: true});
  watch("sources", () => text(".sources").length > 0);
  watch("evidence", () => turn() !== null && turn().querySelector(".sources .evidence") !== null);
  watch("answer", () => text(".answer").length > 0);
  new MutationObserver(() => {
    const answer = text(".answer");
    if (answer && answer !== window.__answers.at(-1)) window.__answers.push(answer);
  }).observe(document.getElementById("thread"), {childList: true, subtree: true, characterData: true});
}
"""
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
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


async def answer_text(page: Page, turn: int = 0) -> str:
    """The answer of a turn shown so far."""
    return await page.locator(f"#turn-{turn} .answer").inner_text()


async def ask(page: Page, question: str, turn: int) -> None:
    """Ask a question (the thread's `turn`th) and wait for its answer to end."""
    await page.fill("#query", question)
    await page.click("#ask")
    await page.locator(f'#turn-{turn} .answer:not([data-state="waiting"]):not([data-state="streaming"])').wait_for()


async def test_answer_streams_in_after_the_sources_and_stop_cancels_it(
    browser: Browser, base_url: str, fake: FakeRag
) -> None:
    page = await browser.new_page(viewport={"width": 1000, "height": 900})
    await page.goto(base_url + "/")
    await page.evaluate(FIRST_CONTENT_OBSERVER)

    await page.fill("#query", "What is an LLM twin?")
    await page.fill("#author", "Paul Iusztin")
    await page.click("#ask")

    await page.locator("#turn-0 .sources li").first.wait_for()
    assert await page.locator("#turn-0 .question").inner_text() == "What is an LLM twin? (author: Paul Iusztin)"
    assert await page.input_value("#query") == ""
    # One entry per document: the fake's three chunks come from two documents.
    assert await page.locator("#turn-0 .sources li").count() == 2
    first_source = page.locator("#turn-0 .sources li").first
    assert await first_source.get_attribute("id") == "turn-0-source-1"
    assert await first_source.locator(".number").inner_text() == "[1]"
    assert "An end-to-end framework" in await first_source.inner_text()
    assert "Paul Iusztin · article · score 0.910 · 2 passages" in await first_source.inner_text()
    assert await first_source.locator("a").get_attribute("href") == "https://example.org/llm-twin"
    assert await first_source.locator(".evidence").inner_text() == "The LLM Twin learns to write like you."
    second_source = page.locator("#turn-0 .sources li").nth(1)
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
    assert await page.get_attribute("#turn-0 .answer", "data-state") == "stopped"
    assert await page.is_enabled("#ask") and not await page.is_enabled("#stop")
    assert await page.is_hidden("#error")
    assert await page.is_hidden("#turn-0 .feedback")


async def test_citations_link_to_their_sources_and_cited_sources_are_marked_when_done(
    browser: Browser, base_url: str, fake: FakeRag
) -> None:
    fake.answer, fake.delay_s, fake.hold_final = CITING_ANSWER, 0.0, asyncio.Event()
    page = await browser.new_page()
    await page.goto(base_url + "/")
    await page.fill("#query", "What is an LLM twin?")
    await page.click("#ask")

    # Every delta is out; the final message is held back by the fake.
    await page.wait_for_function("t => document.querySelector('#turn-0 .answer').innerText === t", arg=CITING_ANSWER)
    links = page.locator("#turn-0 .answer a.citation")
    assert await links.all_inner_texts() == ["1", "1"]
    hrefs = [await link.get_attribute("href") for link in await links.all()]
    assert hrefs == ["#turn-0-source-1", "#turn-0-source-1"]
    assert await page.get_attribute("#turn-0 .answer", "data-state") == "streaming"
    assert await page.locator(".sources li.cited").count() == 0
    assert await page.locator(".sources .cited-label:visible").count() == 0

    fake.hold_final.set()
    await page.locator('#turn-0 .answer[data-state="done"]').wait_for()
    assert await answer_text(page) == CITING_ANSWER  # markers keep their text
    cited = await page.locator(".sources li.cited").evaluate_all("items => items.map(i => i.id)")
    assert cited == ["turn-0-source-1"]
    assert await page.locator("#turn-0-source-1 .cited-label").inner_text() == "cited"
    assert await page.is_visible("#turn-0-source-1 .cited-label")
    assert await page.is_hidden("#turn-0-source-2 .cited-label")

    await links.first.click()
    assert await page.evaluate("location.hash") == "#turn-0-source-1"
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

    await page.locator('#turn-0 .answer[data-state="done"]').wait_for()
    assert await answer_text(page) == "Batching pays [1]. It is a loop."
    assert await page.locator("#turn-0 .answer a.citation").get_attribute("href") == "#turn-0-source-1"


async def test_without_sources_the_documents_are_listed_and_numbered(
    browser: Browser, base_url: str, fake: FakeRag
) -> None:
    # A RAG service older than `sources`: its prompt numbered the chunks themselves.
    fake.sources, fake.answer, fake.delay_s = (), "Fine-tuned on your code [3].", 0.0
    page = await browser.new_page()
    await page.goto(base_url + "/")
    await page.fill("#query", "What is an LLM twin?")
    await page.click("#ask")

    await page.locator('#turn-0 .answer[data-state="done"]').wait_for()
    assert await page.locator("#turn-0 .sources .number").all_inner_texts() == ["[1]", "[2]", "[3]"]
    assert await page.locator("#turn-0 .sources .evidence").count() == 0
    assert await page.locator("#turn-0 .answer a.citation").get_attribute("href") == "#turn-0-source-3"


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
    assert await page.get_attribute("#turn-0 .answer", "data-state") == "error"

    # A failed turn is no part of the history a follow-up sends.
    fake.fail, fake.answer, fake.delay_s = None, "Now it works.", 0.0
    await page.fill("#author", "")
    await ask(page, "And now?", 1)
    assert await page.get_attribute("#turn-1 .answer", "data-state") == "done", await page.inner_text("#error")
    assert list(fake.requests[-1].history) == []
    assert await page.is_hidden("#error")


async def test_a_follow_up_carries_the_thread_which_survives_a_reload_until_a_new_chat(
    browser: Browser, base_url: str, fake: FakeRag
) -> None:
    fake.delay_s = 0.0
    page = await browser.new_page()
    await page.goto(base_url + "/")

    fake.answer = "An LLM twin writes like you [1]."
    await ask(page, "What is an LLM twin?", 0)
    fake.answer = "It is fine-tuned on your own posts [2]."
    await ask(page, "How is it trained?", 1)

    first, follow_up = fake.requests[-2:]
    assert list(first.history) == [] and UUID.match(first.conversation_id)
    assert follow_up.query == "How is it trained?" and follow_up.conversation_id == first.conversation_id
    assert [(t.role, t.content) for t in follow_up.history] == [
        (rag_pb2.TURN_ROLE_USER, "What is an LLM twin?"),
        (rag_pb2.TURN_ROLE_ASSISTANT, "An LLM twin writes like you [1]."),
    ]
    # Each answer keeps its own sources and links to them.
    assert await page.locator(".turn").count() == 2
    assert await page.locator("#turn-1 .sources li").count() == 2
    assert await page.locator("#turn-0 .answer a.citation").get_attribute("href") == "#turn-0-source-1"
    assert await page.locator("#turn-1 .answer a.citation").get_attribute("href") == "#turn-1-source-2"
    assert await page.locator("#turn-1 .sources li.cited").evaluate_all("i => i.map(x => x.id)") == ["turn-1-source-2"]

    await page.reload()
    assert await page.locator(".turn").all_inner_texts() != []
    assert await page.locator(".turn .question").all_inner_texts() == ["What is an LLM twin?", "How is it trained?"]
    assert await answer_text(page, 1) == "It is fine-tuned on your own posts [2]."
    assert await page.get_attribute("#turn-1 .answer", "data-state") == "done"
    assert await page.locator("#turn-1 .answer a.citation").get_attribute("href") == "#turn-1-source-2"
    assert await page.is_visible("#turn-1-source-2 .cited-label") and await page.is_hidden(
        "#turn-1-source-1 .cited-label"
    )
    assert "tokens" in await page.locator("#turn-1 .meta").inner_text()

    fake.answer = "Yes [1]."
    await ask(page, "Does it cite sources?", 2)
    after_reload = fake.requests[-1]
    assert after_reload.conversation_id == first.conversation_id
    assert [t.content for t in after_reload.history] == [
        "What is an LLM twin?",
        "An LLM twin writes like you [1].",
        "How is it trained?",
        "It is fine-tuned on your own posts [2].",
    ]
    await page.screenshot(path=str(_artifact("chat_page_thread.png")), full_page=True)

    await page.click("#new-chat")
    assert await page.locator(".turn").count() == 0
    await ask(page, "A new subject?", 0)
    fresh = fake.requests[-1]
    assert list(fresh.history) == [] and UUID.match(fresh.conversation_id)
    assert fresh.conversation_id != first.conversation_id
    await page.reload()
    assert await page.locator(".turn .question").all_inner_texts() == ["A new subject?"]


async def test_stop_in_a_follow_up_leaves_the_thread_and_a_stopped_turn_is_not_history(
    browser: Browser, base_url: str, fake: FakeRag
) -> None:
    page = await browser.new_page()
    await page.goto(base_url + "/")
    fake.answer, fake.delay_s = "Short [1].", 0.0
    await ask(page, "First?", 0)

    fake.answer, fake.delay_s = " ".join(f"word{i}" for i in range(400)), 0.05
    await page.fill("#query", "Second?")
    await page.click("#ask")
    await page.wait_for_function("document.querySelector('#turn-1 .answer').textContent.length > 0")
    await page.click("#stop")
    await asyncio.wait_for(fake.cancelled.wait(), timeout=10)
    await page.locator('#turn-1 .answer[data-state="stopped"]').wait_for()
    assert await answer_text(page, 0) == "Short [1]."

    fake.answer, fake.delay_s = "Third answer.", 0.0
    await ask(page, "Third?", 2)
    assert [t.content for t in fake.requests[-1].history] == ["First?", "Short [1]."]


async def test_an_answer_with_a_trace_id_can_be_rated_with_a_comment(
    browser: Browser, base_url: str, fake: FakeRag
) -> None:
    fake.delay_s, fake.trace_id = 0.0, "0194f1a2-7d3c-7b4e-9a6f-0123456789ab"
    posted: list[dict[str, Any]] = []
    replies = [
        (422, {"error": {"code": 422, "status": "INVALID_ARGUMENT", "message": "bad feedback", "reason": "X"}}),
        (202, {"status": "accepted"}),
    ]

    async def feedback_route(route: Route) -> None:
        posted.append(json.loads(route.request.post_data or "{}"))
        status, body = replies.pop(0)
        await route.fulfill(status=status, content_type="application/json", body=json.dumps(body))

    page = await browser.new_page()
    await page.route("**/v1/feedback", feedback_route)
    await page.goto(base_url + "/")
    await ask(page, "What is an LLM twin?", 0)
    assert await page.is_visible("#turn-0 .feedback")

    await page.click('#turn-0 .rate[data-rating="down"]')
    status = page.locator("#turn-0 .feedback-status")
    await page.wait_for_function("document.querySelector('#turn-0 .feedback-status').textContent.includes('bad')")
    assert "bad feedback" in await status.inner_text() and "INVALID_ARGUMENT" in await status.inner_text()
    assert posted == [{"trace_id": fake.trace_id, "rating": "down"}]
    assert await page.is_enabled('#turn-0 .rate[data-rating="up"]')

    await page.fill("#turn-0 .comment", "  Clear and well sourced.  ")
    await page.click('#turn-0 .rate[data-rating="up"]')
    await page.wait_for_function("document.querySelector('#turn-0 .feedback-status').textContent.includes('Thanks')")
    assert posted[-1] == {"trace_id": fake.trace_id, "rating": "up", "comment": "Clear and well sourced."}
    assert not await page.is_enabled('#turn-0 .rate[data-rating="up"]')
    assert await page.get_attribute('#turn-0 .rate[data-rating="up"]', "aria-pressed") == "true"

    # The rating is remembered with the thread; an answer without a trace id (traces off) offers no rating.
    fake.trace_id = ""
    await ask(page, "And without traces?", 1)
    assert await page.is_hidden("#turn-1 .feedback")
    await page.reload()
    assert "Thanks" in await page.locator("#turn-0 .feedback-status").inner_text()
    assert await page.is_hidden("#turn-1 .feedback")
    assert len(posted) == 2


def _artifact(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name
