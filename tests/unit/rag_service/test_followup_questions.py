"""The follow-up question set (data/followup_questions.jsonl) is well formed: each row's history is a valid
conversation, its expected documents exist, and the author it expects is one the corpus has."""

from __future__ import annotations

from rag_service.conversation import Role
from tests.support.data import DATA, read_jsonl

FIELDS = {"id", "history", "question", "standalone", "relevant_ids", "author_id"}


def test_every_row_has_a_history_and_its_expected_documents_exist() -> None:
    docs = {doc["id"]: doc for doc in read_jsonl(DATA / "corpus.jsonl")}
    authors = {doc["author_id"] for doc in docs.values()}
    rows = read_jsonl(DATA / "followup_questions.jsonl")
    assert len(rows) >= 20 and len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        assert set(r) == FIELDS, r["id"]
        assert r["history"] and all(t["content"].strip() and Role(t["role"]) for t in r["history"]), r["id"]
        assert r["history"][0]["role"] == "user", r["id"]
        assert r["question"].strip() and r["standalone"].strip(), r["id"]
        assert r["relevant_ids"] and all(d in docs for d in r["relevant_ids"]), r["id"]
        assert r["author_id"] is None or r["author_id"] in authors, r["id"]
        if r["author_id"]:  # the author is named in the conversation, so self-query can still find them
            name = docs[r["relevant_ids"][0]]["author_full_name"].split()[0]
            assert any(name in t["content"] for t in r["history"]), r["id"]


def test_most_follow_ups_lean_on_their_history() -> None:
    rows = read_jsonl(DATA / "followup_questions.jsonl")
    assert sum(r["question"] != r["standalone"] for r in rows) >= len(rows) - 5
