"""The answer-quality question set in data/ is well formed, and every key fact can be checked against the corpus."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from typing import Any

import pytest

from tests.support.data import DATA, read_jsonl

TYPES = {"answerable", "unanswerable", "unknown_author"}
FIELDS = {"id", "type", "question", "author_id", "relevant_ids", "key_facts"}
MIN_PER_TYPE = {"answerable": 20, "unanswerable": 5, "unknown_author": 3}


def _norm(text: str) -> str:
    """Lower case with runs of whitespace collapsed to one space: the form key facts are matched in."""
    return " ".join(text.lower().split())


def _fold(text: str) -> str:
    """Lower case without accents, so "Tomas" and "Tomás" compare equal."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", _fold(text)))


@pytest.fixture(scope="module")
def by_id() -> dict[str, dict[str, Any]]:
    """The sample documents by id."""
    return {doc["id"]: doc for doc in read_jsonl(DATA / "corpus.jsonl")}


@pytest.fixture(scope="module")
def author_names(by_id: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Each corpus author's full name, by author id."""
    return {doc["author_id"]: doc["author_full_name"] for doc in by_id.values()}


@pytest.fixture(scope="module")
def questions() -> list[dict[str, Any]]:
    """The answer-quality questions."""
    return read_jsonl(DATA / "answer_questions.jsonl")


@pytest.fixture(scope="module")
def answerable(questions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [q for q in questions if q["type"] == "answerable"]


def test_every_question_has_exactly_the_expected_fields(questions: list[dict[str, Any]]) -> None:
    for q in questions:
        assert set(q) == FIELDS, f"{q.get('id')}: fields {sorted(set(q) ^ FIELDS)} differ"
        assert isinstance(q["question"], str) and q["question"].strip(), q["id"]
        assert isinstance(q["relevant_ids"], list) and isinstance(q["key_facts"], list), q["id"]


def test_ids_are_unique(questions: list[dict[str, Any]]) -> None:
    duplicates = [qid for qid, n in Counter(q["id"] for q in questions).items() if n > 1]
    assert duplicates == []


def test_types_are_answerable_unanswerable_or_unknown_author(questions: list[dict[str, Any]]) -> None:
    assert {q["type"] for q in questions} == TYPES


def test_each_type_has_enough_questions(questions: list[dict[str, Any]]) -> None:
    counts = Counter(q["type"] for q in questions)
    assert all(counts[kind] >= n for kind, n in MIN_PER_TYPE.items()), counts


def test_answerable_relevant_ids_name_documents(
    answerable: list[dict[str, Any]], by_id: dict[str, dict[str, Any]]
) -> None:
    for q in answerable:
        relevant = q["relevant_ids"]
        assert 1 <= len(relevant) <= 3 and len(set(relevant)) == len(relevant), q["id"]
        missing = [doc_id for doc_id in relevant if doc_id not in by_id]
        assert missing == [], f"{q['id']} refers to unknown documents {missing}"


def test_answerable_questions_have_two_to_four_key_facts_of_short_phrases(answerable: list[dict[str, Any]]) -> None:
    for q in answerable:
        facts = q["key_facts"]
        assert 2 <= len(facts) <= 4, f"{q['id']} has {len(facts)} key facts"
        for fact in facts:
            assert isinstance(fact, list) and fact, f"{q['id']}: empty key fact"
            for alternative in fact:
                assert isinstance(alternative, str) and alternative.strip(), f"{q['id']}: blank alternative"
                assert 1 <= len(alternative.split()) <= 4, f"{q['id']}: {alternative!r} is not 1 to 4 words"


def test_every_key_fact_alternative_occurs_in_a_relevant_document(
    answerable: list[dict[str, Any]], by_id: dict[str, dict[str, Any]]
) -> None:
    for q in answerable:
        texts = [_norm(by_id[doc_id]["content"]) for doc_id in q["relevant_ids"]]
        for fact in q["key_facts"]:
            for alternative in fact:
                found = any(_norm(alternative) in text for text in texts)
                assert found, f"{q['id']}: {alternative!r} is in none of {q['relevant_ids']}"


def test_no_key_fact_alternative_is_already_in_the_question(answerable: list[dict[str, Any]]) -> None:
    for q in answerable:
        question = _norm(q["question"])
        given = [alt for fact in q["key_facts"] for alt in fact if _norm(alt) in question]
        assert given == [], f"{q['id']}: the question already contains {given}"


def test_a_question_with_an_author_points_only_at_that_authors_documents(
    questions: list[dict[str, Any]], by_id: dict[str, dict[str, Any]], author_names: dict[str, str]
) -> None:
    for q in questions:
        if q["author_id"] is None:
            continue
        assert q["author_id"] in author_names, f"{q['id']}: unknown author {q['author_id']}"
        authors = {by_id[doc_id]["author_id"] for doc_id in q["relevant_ids"]}
        assert authors <= {q["author_id"]}, f"{q['id']}: documents by {authors}"


def test_author_id_is_set_exactly_when_the_question_names_a_corpus_author(
    questions: list[dict[str, Any]], author_names: dict[str, str]
) -> None:
    first_names = {author_id: _fold(name.split()[0]) for author_id, name in author_names.items()}
    for q in questions:
        named = {author_id for author_id, first in first_names.items() if first in _words(q["question"])}
        expected = {q["author_id"]} if q["author_id"] is not None else set()
        assert named == expected, f"{q['id']} names {named} but has author_id {q['author_id']}"


def test_unanswerable_and_unknown_author_questions_have_no_facts_or_documents(
    questions: list[dict[str, Any]],
) -> None:
    for q in questions:
        if q["type"] != "answerable":
            assert q["relevant_ids"] == [] and q["key_facts"] == [], q["id"]


def test_unknown_author_questions_name_nobody_in_the_corpus(
    questions: list[dict[str, Any]], author_names: dict[str, str]
) -> None:
    name_words = {word for name in author_names.values() for word in _words(name)}
    for q in questions:
        if q["type"] == "unknown_author":
            assert q["author_id"] is None, q["id"]
            assert _words(q["question"]) & name_words == set(), q["id"]
            assert not any(_fold(name) in _fold(q["question"]) for name in author_names.values()), q["id"]
