"""History-aware retrieval: a follow-up ("and what did she measure?") turned into a standalone search query.

Two ways, chosen per LLM backend (RAG_CONDENSE_EMBEDDED, RAG_CONDENSE_REMOTE; figures in docs/evaluation.md,
Conversations):

- lexical: no model call. A question that refers back (a pronoun, "what about...", or too few words of its
  own) gets the content words of the reader's earlier questions appended, most recent first and bounded, so
  the entities it refers to are searched too. A question that stands on its own is searched as it is.
- llm: a strict, short rewrite through the LLM service with its own timeout; on a timeout, an error or an
  unusable answer, the lexical rewrite is used instead.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rag_service.conversation import Conversation, Role, Turn
from rag_service.llm_client import LlmClient
from rag_service.types import GenerationParameters, Prompt

CARRIED_QUESTIONS = 2  # earlier questions whose words a follow-up carries
CARRIED_WORDS = 24
REWRITE_TURNS = 4  # dialogue turns shown to the rewriting model
REWRITE_TURN_CHARS = 300
REWRITE_MAX_TOKENS = 48

SYSTEM = (
    "Rewrite the reader's last question as one standalone question that can be understood without the "
    "conversation: replace every pronoun and vague reference with the name or thing it refers to. Keep the "
    "question's meaning. Answer with the rewritten question only."
)

_WORD = re.compile(r"[\w][\w.\-/=']*[\w]|\w", re.UNICODE)
# Words that point back at an earlier turn.
_REFERRING = frozenset(
    "it its it's this that these those they them their theirs he him his she her hers there same such above "
    "earlier former latter previous mentioned".split()
)
_OPENERS = ("and ", "what about", "how about", "also", "but ", "so ", "then ")
_STOPWORDS = frozenset(
    "a an the and or but if then so of to in on at by for with from into about as is are was were be been being "
    "do does did doing have has had having what which who whom whose why how when where can could should would "
    "will shall may might must i you we me my your our us it its it's this that these those they them their he "
    "him his she her there here not no yes than too very just also more most much many some any all each other "
    "such same own only one ones up down out over under again further once think thinks say says said tell "
    "explain describe does use used using get got make made way ways well really actually".split()
)
MIN_OWN_WORDS = 3  # a question with fewer content words of its own is a follow-up


def content_words(text: str) -> list[str]:
    """The words of `text` that carry meaning (stopwords dropped), in order, first occurrence only."""
    seen: set[str] = set()
    out = []
    for word in _WORD.findall(text):
        key = word.lower().strip("'")
        if key in _STOPWORDS or key in seen or (len(key) < 2 and not key.isdigit()):
            continue
        seen.add(key)
        out.append(word)
    return out


def is_follow_up(query: str) -> bool:
    """Whether the question leans on earlier turns: it refers back, opens as a continuation, or says too little."""
    lowered = query.lower().strip()
    words = {w.lower().strip("'") for w in _WORD.findall(lowered)}
    return bool(words & _REFERRING) or lowered.startswith(_OPENERS) or len(content_words(query)) < MIN_OWN_WORDS


def lexical_standalone(query: str, conversation: Conversation) -> str:
    """The query, plus the content words of the reader's earlier questions when it is a follow-up."""
    earlier = conversation.questions[:CARRIED_QUESTIONS]
    if not earlier or not is_follow_up(query):
        return query
    own = {w.lower() for w in content_words(query)}
    carried: list[str] = []
    for question in earlier:
        for word in content_words(question):
            if word.lower() not in own and len(carried) < CARRIED_WORDS:
                own.add(word.lower())
                carried.append(word)
    return f"{query} ({' '.join(carried)})" if carried else query


def rewrite_prompt(query: str, turns: Sequence[Turn], style: str = "chat") -> Prompt:
    """The strict rewrite instruction: the last few turns, each cut short, then the question."""
    shown = []
    for turn in turns[-REWRITE_TURNS:]:
        who = "Reader" if turn.role == Role.USER else "Writer"
        text = turn.content if len(turn.content) <= REWRITE_TURN_CHARS else turn.content[:REWRITE_TURN_CHARS] + "…"
        shown.append(f"{who}: {' '.join(text.split())}")
    user = "Conversation:\n" + "\n".join(shown) + f"\n\nLast question: {query}\n\nStandalone question:"
    return Prompt.instruction(SYSTEM, user, style)


def parse_rewrite(text: str, query: str) -> str:
    """The model's rewrite, or "" when it is not a usable question: empty, runaway, not a question, or
    without most of the follow-up's own words."""
    line = next((ln for ln in text.strip().splitlines() if ln.strip()), "")
    line = re.sub(r"^(standalone question|question|rewritten question)\s*:\s*", "", line.strip(), flags=re.I)
    line = line.strip().strip('"').strip("'").strip()
    if len(line) < 8 or len(line) > 2 * len(query) + 200 or not line.endswith("?"):
        return ""
    # A rewrite keeps most of the question's own words; one that does not answers or drifts (small models do).
    own = {w.lower() for w in content_words(query)}
    kept = own & {w.lower() for w in content_words(line)}
    return line if len(kept) * 2 >= len(own) else ""


async def llm_standalone(
    llm: LlmClient, query: str, conversation: Conversation, *, timeout: float, style: str = "chat"
) -> str:
    """The LLM's standalone rewrite of a follow-up; a question with no earlier turn, or one that does not refer
    back, is returned as it is without a call. Raises on failure; an unusable answer raises ValueError."""
    if not conversation.questions or not is_follow_up(query):
        return query
    parameters = GenerationParameters(max_new_tokens=REWRITE_MAX_TOKENS, temperature=0, stop_sequences=("\n",))
    result = await llm.generate(rewrite_prompt(query, conversation.dialogue, style), parameters, timeout=timeout)
    rewritten = parse_rewrite(result.text, query)
    if not rewritten:
        raise ValueError(f"unusable rewrite: {result.text[:80]!r}")
    return rewritten
