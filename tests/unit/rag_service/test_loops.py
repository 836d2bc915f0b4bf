"""The loop guard stops an answer at the first repetition, however the text is cut into stream pieces."""

from __future__ import annotations

import pytest

from rag_service.pipeline.loops import LoopGuard


def stream(text: str, size: int) -> LoopGuard:
    guard = LoopGuard()
    for i in range(0, len(text), size):
        if guard.feed(text[i : i + size]):
            break
    return guard


@pytest.mark.parametrize("size", [1, 3, 7, 1000])
def test_a_repeated_sentence_ends_the_answer_before_the_repeat(size: int):
    text = "She is a developer. She likes Rust. She is a developer. She is a developer."
    guard = stream(text, size)
    assert guard.looping and guard.answer == "She is a developer. She likes Rust."


@pytest.mark.parametrize("size", [1, 4, 1000])
def test_a_repeated_run_of_eight_words_ends_the_answer_where_the_run_began(size: int):
    text = (
        "The static batcher collected requests for up to 50 ms, padded them, and the static batcher collected "
        "requests for up to 50 ms again"
    )
    guard = stream(text, size)
    assert guard.looping and guard.answer == "The static batcher collected requests for up to 50 ms, padded them, and"


def test_an_answer_that_does_not_repeat_itself_passes_whole():
    text = (
        "Continuous batching raised throughput from 140 to 510 tokens per second [1]. Time to first token "
        "fell to 260 ms [1]. It is not free: the scheduler needs tuning [2]. The time to first token matters."
    )
    guard = stream(text, 5)
    assert not guard.looping and guard.answer == text


def test_short_repeated_sentences_and_numbers_are_not_loops():
    text = "Yes. Yes. It took 3.5 s, then 3.5 s again, then 3.5 s. I agree. Done."
    guard = stream(text, 2)
    assert not guard.looping and guard.answer == text
