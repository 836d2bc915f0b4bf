"""Pipeline steps on their own: self-query matching, expansion parsing, dedupe, reranking, prompt fitting."""

from __future__ import annotations

import pytest

from rag_service.errors import InvalidArgument
from rag_service.pipeline.expand import parse_expansions
from rag_service.pipeline.prompt import SYSTEM, fit_prompt, render
from rag_service.pipeline.rerank import MmrReranker, VectorOrder
from rag_service.pipeline.search import SearchRun, dedupe
from rag_service.pipeline.self_query import match_author, mentions_a_name, person_asked_about, resolve_name
from rag_service.pipeline.sources import Source, group_by_document
from rag_service.types import Author, Chunk, Kind, Prompt, ScoredChunk

AUTHORS = [
    Author("elena-varga", "Elena Varga"),
    Author("tomas-okafor", "Tomás Okafor"),
    Author("jonas-lindqvist", "Jonas Lindqvist"),
    Author("jonas-berg", "Jonas Berg"),
]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("What does Elena Varga think about batching?", "elena-varga"),
        ("elena varga on kv caches", "elena-varga"),
        ("How did Elena tune the scheduler?", "elena-varga"),
        ("Varga's view on quantization", "elena-varga"),
        ("What did Tomas Okafor say about CDC?", "tomas-okafor"),  # accents folded
        ("Okafor’s chunking advice", "tomas-okafor"),
        ("What does Lindqvist use for LoRA?", "jonas-lindqvist"),
        ("What does Jonas think?", None),  # two authors are called Jonas: ambiguous, no filter
        ("What is continuous batching?", None),
        ("What does Ada Lovelace think?", None),
    ],
)
def test_fast_author_match(query, expected):
    found = match_author(query, AUTHORS)
    assert (found.id if found else None) == expected


def test_a_name_from_the_llm_only_counts_when_it_is_an_author_in_the_store():
    assert resolve_name("Elena Vargas", AUTHORS) == AUTHORS[0]
    assert resolve_name("NONE", AUTHORS) is None
    assert resolve_name("Ada Lovelace", AUTHORS) is None
    assert mentions_a_name("What does Ada Lovelace think?") and mentions_a_name("Ada Lovelace's view?")
    assert not mentions_a_name("What is a KV cache?") and not mentions_a_name("Is Qdrant faster than Python?")


def test_expansions_are_parsed_one_per_line_without_numbering_or_the_original():
    text = (
        "1. How does batching raise throughput?\n2) what is continuous batching\n"
        "- What is continuous batching?\n\n3. ok"
    )
    assert parse_expansions(text, "What is continuous batching?", 3) == [
        "How does batching raise throughput?",
        "what is continuous batching",
    ]


def hit(doc: str, index: int, score: float, vector: tuple[float, ...], text: str | None = None) -> ScoredChunk:
    chunk = Chunk(doc, Kind.ARTICLE, "elena-varga", "Elena Varga", index, text or f"{doc} chunk {index}", "T", "")
    return ScoredChunk(chunk, score, score, vector)


def test_dedupe_keeps_the_best_hit_per_chunk_and_drops_identical_text():
    a1, a1_again = hit("a", 0, 0.5, (1, 0)), hit("a", 0, 0.7, (1, 0))
    b = hit("b", 0, 0.6, (0, 1), text="a chunk 0")  # same text as a's chunk, lower score
    runs = [SearchRun(0, Kind.ARTICLE, [a1, b], 0, 0), SearchRun(1, Kind.ARTICLE, [a1_again], 0, 0)]
    assert dedupe(runs) == [a1_again]


async def test_mmr_prefers_diverse_context_over_near_duplicates():
    near_a = hit("a", 0, 0.90, (1.0, 0.0))
    near_b = hit("b", 0, 0.89, (0.99, 0.01))
    other = hit("c", 0, 0.80, (0.0, 1.0))
    mmr = await MmrReranker(diversity=0.3).rerank("q", (1, 0), [near_a, near_b, other], 2)
    assert [h.chunk.document_id for h in mmr] == ["a", "c"]
    plain = await VectorOrder().rerank("q", (1, 0), [near_a, near_b, other], 2)
    assert [h.chunk.document_id for h in plain] == ["a", "b"]


async def count_words(prompt: Prompt) -> int:
    text = prompt.text if prompt.text is not None else " ".join(c for _, c in prompt.messages)
    return len(text.split())


def sources_of(*hits: ScoredChunk) -> list[Source]:
    return group_by_document(hits)


def other_author_hit() -> ScoredChunk:
    chunk = Chunk("b", Kind.POST, "tomas-okafor", "Tomás Okafor", 0, "b chunk 0", "", "")
    return ScoredChunk(chunk, 0.8, 0.8)


async def test_prompt_fitting_cuts_context_from_the_bottom_and_never_the_question():
    sources = sources_of(*(hit(d, 0, 0.9 - i / 10, (1, 0), text="word " * 100) for i, d in enumerate("abc")))
    built = await fit_prompt("What is it?", sources, None, style="chat", budget=300, count=count_words)
    assert built.tokens <= 300 and [s.document_id for s in built.used] == ["a", "b"] and built.dropped == 1
    assert built.prompt.messages[-1][1].endswith("Question: What is it?")
    tight = await fit_prompt("What is it?", sources, None, style="chat", budget=120, count=count_words)
    assert len(tight.used) == 1 and len(tight.used[0].text) < 500  # the last block shortened
    with pytest.raises(InvalidArgument):
        await fit_prompt("word " * 500, sources, None, style="chat", budget=100, count=count_words)


def test_alpaca_format_wraps_the_instruction_as_twinllama_was_trained():
    prompt = render("Why?", sources_of(hit("a", 0, 0.9, (1, 0))), AUTHORS[0], "alpaca")
    assert prompt.text is not None and prompt.text.startswith("Below is an instruction")
    assert f"### Instruction:\n{SYSTEM}\n\nContext from Elena Varga's writing:\n[1] a chunk 0" in prompt.text
    assert prompt.text.endswith("Question: Why?\n\n### Response:\n")


def test_the_fixed_instruction_comes_first_and_the_request_follows_in_the_user_turn():
    one = render("Why?", sources_of(hit("a", 0, 0.9, (1, 0))), AUTHORS[0], "chat")
    other = render("How?", sources_of(hit("b", 0, 0.9, (1, 0))), AUTHORS[1], "chat")
    assert one.messages[0] == other.messages[0] == ("system", SYSTEM)  # a prefix the engine's KV cache reuses
    assert one.messages[1] == ("user", "Context from Elena Varga's writing:\n[1] a chunk 0\n\nQuestion: Why?")
    assert other.messages[1][1].startswith("Context from Tomás Okafor's writing:\n")
    two = render("Who?", sources_of(hit("a", 0, 0.9, (1, 0)), other_author_hit()), None, "chat")
    assert two.messages[1][1].startswith("Context from the writing of Elena Varga and Tomás Okafor:\n[1] a chunk 0")


@pytest.mark.parametrize(
    ("query", "person"),
    [
        ("What does Marcus Feldmann think about speculative decoding?", "Marcus Feldmann"),
        ("Which LoRA rank did Sofia Marchetti choose for her twin?", "Sofia Marchetti"),
        ("What benchmark does Kenji Watanabe recommend?", "Kenji Watanabe"),
        ("According to Ada King Lovelace, what matters?", "Ada King Lovelace"),
        ("How does Qdrant Edge store payload indexes?", ""),  # a product: no verb of opinion follows
        ("How does Hugging Face TGI compare with vLLM?", ""),
        ("What does Marcus think about it?", ""),  # one word: not a full name
        ("Why use Continuous Batching on an A10G?", ""),
    ],
)
def test_a_person_the_question_asks_about_is_found_by_its_grammar(query: str, person: str):
    assert person_asked_about(query) == person
