"""Self-query: the author named in the question, if any, as a filter. Only authors in the store qualify."""

from __future__ import annotations

import difflib
import itertools
import re
import unicodedata
from dataclasses import dataclass

from rag_service.llm_client import LlmClient
from rag_service.types import Author, GenerationParameters, Prompt

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


# Verbs a question puts after a person it asks about: "What does X think", "Which rank did X choose".
_PERSON_VERBS = frozenset(
    "think thinks thought believe believes say says said feel feels recommend recommends suggest suggests argue "
    "argues prefer prefers choose chooses chose pick picks picked decide decides decided write writes wrote "
    "advise advises like likes dislike dislikes consider considers measure measures measured use uses used "
    "learn learns learned conclude concludes concluded find finds found".split()
)
_AUXILIARIES = frozenset("does did do would has have is was".split())


def person_asked_about(query: str) -> str:
    """The full name of a person the question asks about, by its grammar: an auxiliary, two or more
    capitalized words, then a verb of opinion or practice ("What does Marcus Feldmann think...", "Which rank
    did Sofia Marchetti choose..."), or "according to" a full name. "" when there is none: a product name
    ("How does Qdrant Edge store...") is not followed by such a verb."""
    words = [w.strip(".,;:!?()\"'’") for w in query.split()]

    def name_at(i: int) -> int:
        """Length of the run of capitalized words starting at i."""
        n = 0
        while i + n < len(words) and words[i + n][:1].isupper() and words[i + n][1:].islower():
            n += 1
        return n

    for i, word in enumerate(words):
        lowered = word.lower()
        if lowered in _AUXILIARIES or (lowered == "to" and i > 0 and words[i - 1].lower() == "according"):
            n = name_at(i + 1)
            verb = words[i + 1 + n].lower() if i + 1 + n < len(words) else ""
            if n >= 2 and (lowered == "to" or verb in _PERSON_VERBS):
                return " ".join(words[i + 1 : i + 1 + n])
    return ""


async def extract_author(
    llm: LlmClient, query: str, authors: list[Author], *, timeout: float, style: str = "chat"
) -> Named:
    """Fast match first; then a person the question asks about by its grammar (an author, else reported as
    unknown); then, when the query still seems to name someone, the LLM with a strict output format."""
    if author := match_author(query, authors):
        return Named(author)
    if not authors or not mentions_a_name(query):
        return Named()
    if person := person_asked_about(query):
        # A misspelt author ("Elena Vargas") is still that author; anyone else is not in the store.
        author = resolve_name(person, authors)
        return Named(author) if author else Named(unknown_person=person)
    prompt = Prompt.instruction(SYSTEM, query, style)
    parameters = GenerationParameters(max_new_tokens=12, temperature=0, stop_sequences=("\n",))
    result = await llm.generate(prompt, parameters, timeout=timeout)
    return Named(resolve_name(result.text, authors))
