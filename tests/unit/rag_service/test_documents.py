"""JSON Lines documents: valid ones parsed, bad lines reported with their line numbers."""

from __future__ import annotations

import json

from rag_service.documents import parse_jsonl, to_document, validate_document
from rag_service.types import Document, Kind

VALID = {
    "id": "a-1",
    "kind": "article",
    "author_id": "ada",
    "author_full_name": "Ada Lovelace",
    "content": "Notes on the analytical engine.",
}


def line(**changes: object) -> str:
    record = {**VALID, **changes}
    return json.dumps({k: v for k, v in record.items() if v is not ...})


def test_valid_lines_become_documents() -> None:
    docs, rejected = parse_jsonl([line(), line(id="p-1", kind="post", title="Hi", link="https://x.org/p")])
    assert rejected == []
    assert docs == [
        Document("a-1", Kind.ARTICLE, "ada", "Ada Lovelace", "Notes on the analytical engine."),
        Document("p-1", Kind.POST, "ada", "Ada Lovelace", "Notes on the analytical engine.", "Hi", "https://x.org/p"),
    ]


def test_bad_lines_are_rejected_with_line_number_id_and_reason() -> None:
    lines = [
        line(),
        "",
        "{not json",
        line(id="b-1", kind="tweet"),
        line(id="b-2", content="   "),
        line(id="b-3", author_id=...),
        "[1, 2]",
        line(id=7),
        line(id="b-4", title=3),
        "   ",
        line(id="ok-2"),
    ]
    docs, rejected = parse_jsonl(lines)
    assert [d.id for d in docs] == ["a-1", "ok-2"]
    assert [(n, i) for n, i, _ in rejected] == [
        (3, ""),
        (4, "b-1"),
        (5, "b-2"),
        (6, "b-3"),
        (7, ""),
        (8, ""),
        (9, "b-4"),
    ]
    reasons = [r for _, _, r in rejected]
    assert reasons[0].startswith("invalid JSON")
    assert "kind: must be one of article, post, repository" in reasons[1]
    assert reasons[2] == "content: required, a non-empty string"
    assert reasons[3] == "author_id: required, a non-empty string"
    assert reasons[4] == "not a JSON object"
    assert reasons[5] == "id: required, a non-empty string"
    assert reasons[6] == "title: must be a string"


def test_every_problem_of_a_line_is_reported() -> None:
    _, [(_, _, reason)] = parse_jsonl([json.dumps({"kind": "article"})])
    assert reason.count("required") == 4


def test_validation_accepts_objects_with_the_fields() -> None:
    doc = to_document(VALID)
    assert validate_document(doc) == []
    assert validate_document({**VALID, "kind": Kind.REPOSITORY}) == []
    assert validate_document({}) == [
        f"{f}: required, a non-empty string" for f in ("id", "kind", "author_id", "author_full_name", "content")
    ]
