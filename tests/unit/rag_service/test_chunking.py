"""Token-aware chunking with the embedding model's own tokenizer."""

from __future__ import annotations

import random
from itertools import pairwise

import pytest
from tokenizers import Tokenizer

from rag_service.chunking import DEFAULT_CHUNK_SIZES, ChunkSize, chunk_document
from rag_service.embedding import load_tokenizer
from rag_service.types import Chunk, Document, Kind

WORDS = (
    "the model reads tokens and splits long documents into overlapping chunks while keeping "
    "sentences whole internationalization of vector search retrieval augmented generation"
).split()


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return load_tokenizer()


def article_text(paragraphs: int, seed: int = 7) -> str:
    rng = random.Random(seed)
    out = []
    for _ in range(paragraphs):
        sentences = [
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 30))).capitalize() + "."
            for _ in range(rng.randint(2, 7))
        ]
        out.append(" ".join(sentences))
    return "\n\n".join(out)


def doc(content: str, kind: Kind = Kind.ARTICLE) -> Document:
    return Document(
        id="doc-1",
        kind=kind,
        author_id="ada",
        author_full_name="Ada Lovelace",
        content=content,
        title="On Engines",
        link="https://example.org/engines",
    )


def n_tokens(tokenizer: Tokenizer, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False).ids)


def positions(text: str, chunks: list[Chunk]) -> list[tuple[int, int]]:
    spans, at = [], 0
    for c in chunks:
        start = text.index(c.content, at)
        spans.append((start, start + len(c.content)))
        at = start + 1
    return spans


@pytest.mark.parametrize("kind", list(Kind))
def test_chunks_fit_the_kind_size_in_model_tokens(tokenizer: Tokenizer, kind: Kind) -> None:
    chunks = chunk_document(doc(article_text(12), kind), tokenizer)
    assert len(chunks) > 3
    assert all(n_tokens(tokenizer, c.content) <= DEFAULT_CHUNK_SIZES[kind].tokens for c in chunks)


def test_consecutive_chunks_overlap_by_at_most_the_overlap(tokenizer: Tokenizer) -> None:
    text = article_text(12)
    chunks = chunk_document(doc(text), tokenizer)
    spans = positions(text, chunks)
    for (_, end), (next_start, _) in pairwise(spans):
        shared = text[next_start:end]
        assert next_start < end, "no overlap"
        assert 0 < n_tokens(tokenizer, shared) <= DEFAULT_CHUNK_SIZES[Kind.ARTICLE].overlap


def test_chunks_cover_the_whole_document(tokenizer: Tokenizer) -> None:
    text = article_text(12)
    spans = positions(text, chunk_document(doc(text), tokenizer))
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(next_start <= end for (_, end), (next_start, _) in pairwise(spans))


def test_chunks_end_at_sentence_ends_and_never_mid_word(tokenizer: Tokenizer) -> None:
    text = article_text(12)
    chunks = chunk_document(doc(text), tokenizer)
    for (start, end), c in zip(positions(text, chunks), chunks, strict=True):
        assert start == 0 or text[start - 1].isspace()
        assert end == len(text) or text[end].isspace()
        assert c.content.endswith(".")


def test_a_text_without_sentences_is_cut_between_words(tokenizer: Tokenizer) -> None:
    text = " ".join(random.Random(3).choice(WORDS) for _ in range(600))
    chunks = chunk_document(doc(text), tokenizer)
    for start, end in positions(text, chunks):
        assert (start == 0 or text[start - 1] == " ") and (end == len(text) or text[end] == " ")


def test_a_word_longer_than_a_chunk_is_split_anyway(tokenizer: Tokenizer) -> None:
    text = "https://example.org/" + "/".join(["vector"] * 300)  # 600 tokens, no space
    chunks = chunk_document(doc(text), tokenizer)
    assert len(chunks) > 1
    assert all(n_tokens(tokenizer, c.content) <= 200 for c in chunks)


def test_a_short_post_stays_one_chunk(tokenizer: Tokenizer) -> None:
    post = doc("  Shipped the new retrieval pipeline today. Latency is down 40%!\n", Kind.POST)
    (chunk,) = chunk_document(post, tokenizer)
    assert chunk.content == "Shipped the new retrieval pipeline today. Latency is down 40%!"


def test_a_long_post_uses_the_post_size(tokenizer: Tokenizer) -> None:
    chunks = chunk_document(doc(article_text(3), Kind.POST), tokenizer)
    assert len(chunks) > 1
    assert all(n_tokens(tokenizer, c.content) <= 120 for c in chunks)


def test_chunks_carry_the_document_fields_and_consecutive_indexes(tokenizer: Tokenizer) -> None:
    source = doc(article_text(8))
    chunks = chunk_document(source, tokenizer)
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert (c.document_id, c.kind, c.author_id, c.author_full_name, c.title, c.link) == (
            source.id,
            source.kind,
            source.author_id,
            source.author_full_name,
            source.title,
            source.link,
        )


def test_chunking_is_deterministic(tokenizer: Tokenizer) -> None:
    source = doc(article_text(10))
    assert chunk_document(source, tokenizer) == chunk_document(source, tokenizer)


def test_custom_sizes_apply(tokenizer: Tokenizer) -> None:
    sizes = {**DEFAULT_CHUNK_SIZES, Kind.ARTICLE: ChunkSize(50, 0)}
    text = article_text(6)
    chunks = chunk_document(doc(text), tokenizer, sizes)
    assert all(n_tokens(tokenizer, c.content) <= 50 for c in chunks)
    spans = positions(text, chunks)
    assert all(next_start > end for (_, end), (next_start, _) in pairwise(spans))


def test_blank_content_gives_no_chunks(tokenizer: Tokenizer) -> None:
    assert chunk_document(doc(" \n\t "), tokenizer) == []


@pytest.mark.parametrize(("tokens", "overlap"), [(255, 10), (0, 0), (100, 50), (100, -1)])
def test_sizes_that_do_not_fit_the_model_are_refused(tokens: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        ChunkSize(tokens, overlap)
