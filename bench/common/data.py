"""The sample data under data/: the corpus and the labelled question set."""

from __future__ import annotations

import json
from typing import Any

from common.paths import ROOT
from rag_service.documents import parse_jsonl
from rag_service.types import Document


def corpus_documents(limit: int | None = None) -> list[Document]:
    """The documents of data/corpus.jsonl (its first `limit` lines when given); rejected lines left out."""
    lines = (ROOT / "data" / "corpus.jsonl").read_text().splitlines()
    documents, _ = parse_jsonl(lines[:limit])
    return documents


def question_rows() -> list[dict[str, Any]]:
    """The rows of data/questions.jsonl: id, question, relevant_ids, author_id."""
    lines = (ROOT / "data" / "questions.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]
