"""The hybrid-search question set (data/hard_questions.jsonl) is well formed, and each question's evidence is in the
body of every document it expects (not only in a title)."""

from __future__ import annotations

from collections import Counter

from tests.support.data import DATA, read_jsonl

FIELDS = {"id", "type", "question", "relevant_ids", "author_id", "evidence"}


def test_every_expected_document_exists_and_holds_the_evidence_in_its_body() -> None:
    docs = {doc["id"]: doc for doc in read_jsonl(DATA / "corpus.jsonl")}
    questions = read_jsonl(DATA / "hard_questions.jsonl")
    assert len({q["id"] for q in questions}) == len(questions)
    for q in questions:
        assert set(q) == FIELDS, q["id"]
        assert q["relevant_ids"] and all(r in docs for r in q["relevant_ids"]), q["id"]
        for r in q["relevant_ids"]:
            assert q["evidence"] in docs[r]["content"], (q["id"], r)
            assert q["evidence"].lower() not in docs[r].get("title", "").lower(), (q["id"], r)


def test_both_kinds_of_question_are_there() -> None:
    questions = read_jsonl(DATA / "hard_questions.jsonl")
    assert Counter(q["type"] for q in questions) == {"identifier": 16, "paraphrase": 12}
    for q in questions:
        if q["type"] == "identifier":  # the exact name, function or number is asked for
            assert q["evidence"] in q["question"] or q["evidence"] in q["question"].replace(",", ""), q["id"]
