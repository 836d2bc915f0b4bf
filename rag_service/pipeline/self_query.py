"""Self-query: the author named in the question, if any, as a filter. Only authors in the store qualify."""

from __future__ import annotations

import difflib
import itertools
import re
import unicodedata
from dataclasses import dataclass

from llmtwin.llm.v1 import llm_service_pb2 as llm_pb
from rag_service.llm_client import LlmClient, Prompt
from rag_service.types import Author

SYSTEM = (
    "Extract the full name of the person whose opinion or work the question asks about. Answer with the "
    "name only, exactly as written in the question, or with NONE when the question names no person."
)
_WORD = re.compile(r"[a-z0-9]+")
_POSSESSIVE = re.compile(r"['’]s\b")
# Capitalized at the start of a question, never a name.
_FUNCTION_WORDS = frozenset(
    "what how why when where which who whom whose is are was were do does did can could should would will "
    "tell explain describe compare list give show in on for according about the a an i".split()
)


def normalize(text: str) -> str:
    """Lowercase ASCII words separated by single spaces (accents and possessives folded)."""
    text = _POSSESSIVE.sub("", text)
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return " ".join(_WORD.findall(folded))


def match_author(query: str, authors: list[Author]) -> Author | None:
    """The author the query names: full name, or a first or last name that only one author has."""
    words = f" {normalize(query)} "
    for author in authors:
        if f" {normalize(author.full_name)} " in words or f" {normalize(author.id.replace('-', ' '))} " in words:
            return author
    hits: dict[str, set[str]] = {}
    for author in authors:
        for part in normalize(author.full_name).split():
            hits.setdefault(part, set()).add(author.id)
    found = {next(iter(ids)) for part, ids in hits.items() if len(ids) == 1 and f" {part} " in words}
    if len(found) == 1:
        return next(a for a in authors if a.id in found)
    return None


def resolve_name(name: str, authors: list[Author], cutoff: float = 0.75) -> Author | None:
    """The store's author closest to a name the model extracted; None unless it is close enough."""
    name = normalize(name)
    if not name or name == "none":
        return None
    by_name = {normalize(a.full_name): a for a in authors}
    best = difflib.get_close_matches(name, list(by_name), n=1, cutoff=cutoff)
    return by_name[best[0]] if best else match_author(name, authors)


def mentions_a_name(query: str) -> bool:
    """Whether the query holds a full name (two capitalized words in a row): a cheap gate before the LLM.

    A lone capitalized word is more often a product (Qdrant, Python) than a person, and a lone first name
    is either matched above already or not an author in the store.
    """
    words = [w.strip(".,;:!?()\"'’") for w in query.split()]
    capitalized = [bool(w[:1].isupper() and w[1:].islower()) and w.lower() not in _FUNCTION_WORDS for w in words]
    return any(a and b for a, b in itertools.pairwise(capitalized))


@dataclass(frozen=True, slots=True)
class Named:
    """Who the query asks about: an author in the store, or a person who is not one (by the query's spelling)."""

    author: Author | None = None
    unknown_person: str = ""


def named_in_query(name: str, query: str) -> str:
    """The name as the query spells it, when it is a full name there (two or more capitalized words in a row);
    "" otherwise, so that a model's invention or a lone product name never counts as a person."""
    wanted = normalize(name).split()
    if len(wanted) < 2 or wanted == ["none"]:
        return ""
    words = [w.strip(".,;:!?()\"'’") for w in query.split()]
    for i in range(len(words) - len(wanted) + 1):
        span = words[i : i + len(wanted)]
        if [normalize(w) for w in span] == wanted and all(w[:1].isupper() for w in span):
            return _POSSESSIVE.sub("", " ".join(span))
    return ""


async def extract_author(
    llm: LlmClient, query: str, authors: list[Author], *, timeout: float, request_id: str
) -> Named:
    """Fast match first; then, when the query seems to name someone, the LLM with a strict output format.
    A full name the model extracts that is in the query but matches no author is reported as unknown."""
    if author := match_author(query, authors):
        return Named(author)
    if not authors or not mentions_a_name(query):
        return Named()
    prompt = Prompt(messages=(("system", SYSTEM), ("user", query)))
    parameters = llm_pb.GenerationParameters(max_new_tokens=12, temperature=0, stop_sequences=["\n"])
    result = await llm.generate(prompt, parameters, timeout=timeout, request_id=request_id)
    if author := resolve_name(result.text, authors):
        return Named(author)
    return Named(unknown_person=named_in_query(result.text, query))
