"""The sample corpus and its question set in data/ are well formed and agree with each other."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from tests.support.data import DATA, read_jsonl

KINDS = {"article", "post", "repository"}
REQUIRED = ("id", "kind", "author_id", "author_full_name", "content", "link")


@pytest.fixture(scope="module")
def corpus() -> list[dict[str, Any]]:
    """The sample documents."""
    return read_jsonl(DATA / "corpus.jsonl")


@pytest.fixture(scope="module")
def questions() -> list[dict[str, Any]]:
    """The labelled retrieval questions."""
    return read_jsonl(DATA / "questions.jsonl")


@pytest.fixture(scope="module")
def by_id(corpus: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Documents by id."""
    return {doc["id"]: doc for doc in corpus}


def test_every_document_has_its_required_fields_as_non_empty_strings(corpus: list[dict[str, Any]]) -> None:
    for doc in corpus:
        for field in REQUIRED:
            value = doc.get(field)
            assert isinstance(value, str) and value.strip(), f"{doc.get('id')}: {field} missing or empty"


def test_documents_carry_no_unknown_fields(corpus: list[dict[str, Any]]) -> None:
    allowed = {*REQUIRED, "title"}
    for doc in corpus:
        assert set(doc) <= allowed, f"{doc['id']}: unexpected {set(doc) - allowed}"


def test_kinds_are_article_post_or_repository(corpus: list[dict[str, Any]]) -> None:
    assert {doc["kind"] for doc in corpus} == KINDS


def test_articles_and_repositories_have_titles(corpus: list[dict[str, Any]]) -> None:
    for doc in corpus:
        if doc["kind"] != "post":
            assert isinstance(doc.get("title"), str) and doc["title"].strip(), f"{doc['id']} has no title"


def test_ids_are_unique(corpus: list[dict[str, Any]]) -> None:
    duplicates = [doc_id for doc_id, n in Counter(doc["id"] for doc in corpus).items() if n > 1]
    assert duplicates == []


def test_the_corpus_has_at_least_a_hundred_documents(corpus: list[dict[str, Any]]) -> None:
    assert len(corpus) >= 100


def test_every_author_has_written_every_kind(corpus: list[dict[str, Any]]) -> None:
    kinds_by_author: dict[str, set[str]] = {}
    for doc in corpus:
        kinds_by_author.setdefault(doc["author_id"], set()).add(doc["kind"])
    assert len(kinds_by_author) >= 4
    assert all(kinds == KINDS for kinds in kinds_by_author.values()), kinds_by_author


def test_each_author_id_has_exactly_one_full_name(corpus: list[dict[str, Any]]) -> None:
    names: dict[str, set[str]] = {}
    for doc in corpus:
        names.setdefault(doc["author_id"], set()).add(doc["author_full_name"])
    assert all(len(n) == 1 for n in names.values()), names


def test_there_are_at_least_forty_questions_with_unique_ids(questions: list[dict[str, Any]]) -> None:
    assert len(questions) >= 40
    assert len({q["id"] for q in questions}) == len(questions)
    for q in questions:
        assert isinstance(q["question"], str) and q["question"].strip(), q["id"]


def test_every_relevant_id_names_a_document(questions: list[dict[str, Any]], by_id: dict[str, dict[str, Any]]) -> None:
    for q in questions:
        relevant = q["relevant_ids"]
        assert 1 <= len(relevant) <= 3 and len(set(relevant)) == len(relevant), q["id"]
        missing = [doc_id for doc_id in relevant if doc_id not in by_id]
        assert missing == [], f"{q['id']} refers to unknown documents {missing}"


def test_a_question_naming_an_author_only_points_at_that_authors_documents(
    questions: list[dict[str, Any]], by_id: dict[str, dict[str, Any]]
) -> None:
    for q in questions:
        if q["author_id"] is not None:
            authors = {by_id[doc_id]["author_id"] for doc_id in q["relevant_ids"]}
            assert authors == {q["author_id"]}, q["id"]


def test_some_questions_name_an_author_and_most_do_not(questions: list[dict[str, Any]]) -> None:
    with_author = [q for q in questions if q["author_id"] is not None]
    assert 0 < len(with_author) < len(questions) / 2
