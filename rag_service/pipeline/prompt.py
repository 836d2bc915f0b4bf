"""Augmentation: the prompt template, in the format the model was trained with, fitted to its input limit.

The system instruction is the same for every request and comes first, so an engine that reuses a cached
prompt prefix (llama.cpp's slots, vLLM's and TGI's prefix caching) prefills it once; what varies (author,
context, question) follows in the user turn.

A conversation's earlier turns come between the two: real user/assistant messages in the model's chat
template, or folded into the Alpaca instruction ("The conversation so far"). The caller's extra instruction
(its system turn, at most RAG_MAX_INSTRUCTION_CHARS) follows the service's own in the system message, marked
as the reader's, so the service's rules (context only, citations) come first. Fitting the prompt to the
model drops the oldest turns first; the context and the question are only cut once no turn is left.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from rag_service.conversation import Conversation, Role
from rag_service.errors import InvalidArgument
from rag_service.pipeline.sources import Source
from rag_service.types import Author, Prompt

TEMPLATE_VERSION = "twin-v3"

SYSTEM = (
    "You are the digital twin of a writer. Answer the question as the writer, in the first person, in a few "
    "sentences, using only the facts in the numbered context. After each fact, cite its block like [1]. If "
    "the context does not answer the question, say that you don't know. Use the exact numbers of the context."
)
# Small models go on to write the prompt's next label; generation stops there (added to the caller's stops).
STOP_SEQUENCES = ("Question:",)


@dataclass(frozen=True, slots=True)
class BuiltPrompt:
    """The prompt sent to the model, the sources it kept (numbered as in the prompt), and its token count."""

    prompt: Prompt
    used: list[Source]
    tokens: int
    dropped: int
    history_used: int = 0  # earlier turns of the conversation the prompt kept (the most recent ones)
    history_dropped: int = 0


def context_block(source: Source) -> str:
    """One numbered context block: the number the answer cites, then the text (titles, which small models copy
    into their answers, are shown to the reader with the sources instead)."""
    return f"[{source.number}] {source.text.strip()}"


def names_list(names: Sequence[str]) -> str:
    """ "A", "A and B", "A, B and C"."""
    return ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else "".join(names)


def writing_of(sources: Sequence[Source], author: Author | None) -> str:
    """Whose writing the context is: the author filter, else the context's authors."""
    names = [author.full_name] if author else sorted({s.author_full_name for s in sources})
    if len(names) == 1:
        return f"{names[0]}'s writing"
    return "the writing of " + (names_list(names) or "the author")


def system_message(instruction: str) -> str:
    """The service's instruction, then the caller's extra one (a conversation's system turn) when given."""
    if not instruction:
        return SYSTEM
    return f"{SYSTEM}\n\nThe reader adds this instruction (the rules above come first): {instruction}"


def render(
    query: str,
    sources: Sequence[Source],
    author: Author | None,
    style: str,
    conversation: Conversation | None = None,
) -> Prompt:
    """The prompt for these sources: chat messages (the model's own template) or Alpaca text, with the
    conversation's turns between the instruction and the question."""
    conversation = conversation or Conversation()
    context = "\n\n".join(context_block(s) for s in sources) or "(no context found)"
    user = f"Context from {writing_of(sources, author)}:\n{context}\n\nQuestion: {query}"
    system = system_message(conversation.instruction)
    turns = conversation.dialogue
    if not turns:
        return Prompt.instruction(system, user, style)
    if style == "alpaca":
        said = "\n".join(f"{'Reader' if t.role == Role.USER else 'You'}: {t.content}" for t in turns)
        return Prompt.instruction(f"{system}\n\nThe conversation so far:\n{said}", user, style)
    return Prompt(messages=(("system", system), *((t.role.value, t.content) for t in turns), ("user", user)))


async def fit_prompt(
    query: str,
    sources: Sequence[Source],
    author: Author | None,
    *,
    style: str,
    budget: int,
    count: Callable[[Prompt], Awaitable[int]],
    conversation: Conversation | None = None,
) -> BuiltPrompt:
    """The fullest prompt within `budget` tokens: the oldest earlier turn goes first, then the lowest-ranked
    source, then the last kept one is shortened; the question is never cut (a question that alone exceeds the
    budget is rejected). The system turn stays (it is bounded at the edge)."""
    kept = list(sources)
    conversation = conversation or Conversation()
    turns = list(conversation.dialogue)
    total_turns = len(turns)
    instruction = [t for t in conversation.turns if t.role == Role.SYSTEM]
    while True:
        shown = Conversation((*instruction, *turns), conversation.conversation_id)
        prompt = render(query, kept, author, style, shown)
        tokens = await count(prompt)
        if tokens <= budget:
            return BuiltPrompt(prompt, kept, tokens, len(sources) - len(kept), len(turns), total_turns - len(turns))
        if turns:
            turns.pop(0)
            continue
        if len(kept) > 1:
            kept.pop()
            continue
        if kept:
            # Shorten the one remaining block by the excess, converted to characters at this prompt's ratio.
            text = kept[0].text
            chars_per_token = _length(prompt) / tokens
            keep_chars = len(text) - int((tokens - budget + 8) * chars_per_token)
            if keep_chars >= 100:
                kept[0] = replace(kept[0], text=text[:keep_chars])
            else:
                kept.pop()
            continue
        raise InvalidArgument({"query": f"the question alone needs {tokens} tokens; the model accepts {budget}"})


def _length(prompt: Prompt) -> int:
    return len(prompt.text) if prompt.text is not None else sum(len(c) for _, c in prompt.messages)
