"""The chat page in headless Chromium: sources before the first token, a growing answer, Stop cancels upstream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests.support.browser import CHROMIUM, LAUNCH_ARGS
from tests.support.fake_rag import Failure, FakeRag

ARTIFACTS = Path(__file__).resolve().parents[3] / "artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (make browser)"),
]

# Records, in the page, when the sources list and the answer first get content.
FIRST_CONTENT_OBSERVER = """
() => {
  window.__firsts = {};
  const watch = (id) => new MutationObserver(() => {
    const el = document.getElementById(id);
    if (el.textContent.length > 0 && !(id in window.__firsts)) window.__firsts[id] = performance.now();
  }).observe(document.getElementById(id), {childList: true, subtree: true, characterData: true});
  watch("sources");
  watch("answer");
}
"""


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
    assert await page.locator("#sources li").count() == 2
    first_source = page.locator("#sources li").first
    assert "An end-to-end framework" in await first_source.inner_text()
    assert "Paul Iusztin · article · score 0.910" in await first_source.inner_text()
    assert await first_source.locator("a").get_attribute("href") == "https://example.org/llm-twin"

    # The answer grows token by token: several distinct, ever longer prefixes of the full answer.
    samples: list[str] = []
    for _ in range(6):
        await asyncio.sleep(0.12)
        samples.append(await answer_text(page))
    assert all(fake.answer.startswith(sample) for sample in samples)
    lengths = [len(sample) for sample in samples]
    assert lengths == sorted(lengths) and len(set(lengths)) >= 4 and lengths[0] > 0

    firsts = await page.evaluate("window.__firsts")
    assert firsts["sources"] < firsts["answer"]
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
