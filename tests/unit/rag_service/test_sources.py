"""Sources: chunks grouped by document, compressed to the sentences closest to the question, and citations."""

from __future__ import annotations

import numpy as np

from rag_service.pipeline.compress import Compressor, split_sentences
from rag_service.pipeline.sources import cited, group_by_document
from rag_service.types import Chunk, Kind, ScoredChunk


def hit(doc: str, index: int, score: float, text: str = "") -> ScoredChunk:
    chunk = Chunk(doc, Kind.ARTICLE, "elena-varga", "Elena Varga", index, text or f"{doc}#{index}", f"Title {doc}")
    return ScoredChunk(chunk, score, score)


def test_chunks_of_one_document_become_one_source_ranked_by_its_best_chunk():
    sources = group_by_document([hit("a", 2, 0.9), hit("b", 0, 0.8), hit("a", 0, 0.7)])
    assert [(s.number, s.document_id, s.score) for s in sources] == [(1, "a", 0.9), (2, "b", 0.8)]
    assert [h.chunk.chunk_index for h in sources[0].chunks] == [2, 0]  # best first
    assert sources[0].text == "a#0\n\na#2"  # shown in document order


def test_citations_map_markers_to_sources_in_order_once_and_drop_unknown_numbers():
    sources = group_by_document([hit("a", 0, 0.9), hit("b", 0, 0.8), hit("c", 0, 0.7)])
    answer = "Batching pays [2]. It did [1, 2] and [ 3 ][9]; see [0] and [x]."
    assert [s.document_id for s in cited(answer, sources)] == ["b", "a", "c"]
    assert cited("No markers here.", sources) == []


def test_sentences_split_at_sentence_ends_and_lines_joining_fragments():
    text = "The first sentence is here. Second one is 3.5 s long!\n- ok\nThird line is long enough to stand.\nEnd."
    assert split_sentences(text) == [
        "The first sentence is here.",
        "Second one is 3.5 s long!",
        "- ok\nThird line is long enough to stand.\nEnd.",
    ]


class AxisEmbedder:
    """Each sentence is a unit vector on the axis of the first keyword it holds; counts embedded texts."""

    AXES = ("batching", "latency", "cache", "cooking")

    def __init__(self) -> None:
        self.embedded: list[str] = []

    async def embed(self, texts: list[str]) -> list[list[float]]:
        self.embedded += texts
        out = []
        for text in texts:
            v = np.zeros(len(self.AXES))
            axis = next((i for i, word in enumerate(self.AXES) if word in text.lower()), len(self.AXES) - 1)
            v[axis] = 1.0
            out.append(v.tolist())
        return out


A = (
    "We moved to continuous batching in March of that year. The cooking analogy never worked for anybody. "
    "Batching raised throughput to 510 tokens per second."
)
B = "Our latency budget is 300 ms at p95 for everything. The cooking show was on at the time of writing."
QUESTION = [1.0, 0.2, 0.0, 0.0]  # mostly about batching, a little about latency


async def test_compression_keeps_each_sources_best_sentence_then_the_best_overall_in_document_order():
    embedder = AxisEmbedder()
    sources = group_by_document([hit("a", 0, 0.9, A), hit("b", 0, 0.8, B)])
    kept = await Compressor(embedder.embed).compress(QUESTION, sources, budget=45)
    assert [s.number for s in kept] == [1, 2]
    assert kept[0].text == (
        "We moved to continuous batching in March of that year. … Batching raised throughput to 510 tokens per second."
    )
    assert kept[1].text == "Our latency budget is 300 ms at p95 for everything."
    assert kept[0].evidence.startswith("We moved to continuous batching") and "cooking" not in kept[0].evidence


async def test_a_budget_of_zero_keeps_whole_chunks_and_still_gives_evidence():
    sources = group_by_document([hit("a", 0, 0.9, A), hit("b", 0, 0.8, B)])
    kept = await Compressor(AxisEmbedder().embed).compress(QUESTION, sources, budget=0)
    assert [s.text for s in kept] == [A, B]
    assert kept[1].evidence == "Our latency budget is 300 ms at p95 for everything."


async def test_a_source_with_no_room_left_is_dropped_and_the_rest_renumbered():
    sources = group_by_document([hit("a", 0, 0.9, A), hit("b", 0, 0.8, B)])
    kept = await Compressor(AxisEmbedder().embed).compress(QUESTION, sources, budget=12)
    assert [(s.number, s.document_id) for s in kept] == [(1, "a")]
    assert kept[0].text == "We moved to continuous batching in March of that year."


async def test_sentence_vectors_are_cached_across_questions():
    embedder = AxisEmbedder()
    compressor = Compressor(embedder.embed)
    sources = group_by_document([hit("a", 0, 0.9, A)])
    await compressor.compress(QUESTION, sources, budget=100)
    await compressor.compress([0.0, 1.0, 0.0, 0.0], sources, budget=100)
    assert len(embedder.embedded) == 3  # three sentences, embedded once


async def test_overlapping_chunks_give_each_sentence_once_and_code_keeps_its_lines():
    code = "def handler(request):\n    return batcher.submit(request)\n# the batching happens in submit"
    first = hit("a", 0, 0.9, "Batching is the whole trick here. The overlap sentence is repeated here.")
    second = hit("a", 1, 0.8, f"The overlap sentence is repeated here.\n{code}")
    (source,) = group_by_document([first, second])
    assert split_sentences(source.text).count("The overlap sentence is repeated here.") == 1
    (kept,) = await Compressor(AxisEmbedder().embed).compress(QUESTION, [source], budget=1000)
    assert kept.text == f"Batching is the whole trick here. The overlap sentence is repeated here.\n{code}"
    assert "\n" not in kept.evidence


async def test_the_lexical_scorer_ranks_sentences_by_the_question_words_they_share_without_embedding():
    embedder = AxisEmbedder()
    sources = group_by_document([hit("a", 0, 0.9, A), hit("b", 0, 0.8, B)])
    compressor = Compressor(embedder.embed, scorer="lexical")
    kept = await compressor.compress([], sources, budget=30, query="What throughput did batching reach?")
    assert [s.text for s in kept] == [
        "Batching raised throughput to 510 tokens per second.",
        "Our latency budget is 300 ms at p95 for everything.",  # each source keeps its best sentence
    ]
    assert embedder.embedded == []
