"""Stop-sequence matching on a token stream, holding back text that may be the start of a stop sequence."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing

from llm_service.types import Completion, FinishReason, GenerationInput, Request, Token


class StopMatcher:
    """Feeds generated text through; releases only text that can no longer be part of a stop sequence."""

    def __init__(self, stop_sequences: tuple[str, ...]):
        self._stops = tuple(s for s in stop_sequences if s)
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Returns the text safe to emit now; sets `stopped` when a stop sequence completed (it is cut off)."""
        if not self._stops:
            return text
        self._held += text
        cut = min((i for i in (self._held.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            out, self._held = self._held[:cut], ""
            return out
        keep = max((_partial_suffix(self._held, s) for s in self._stops), default=0)
        out, self._held = self._held[: len(self._held) - keep], self._held[len(self._held) - keep :]
        return out

    def flush(self) -> str:
        """Releases the held-back text at the end of the stream."""
        out, self._held = self._held, ""
        return out


def _partial_suffix(text: str, stop: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `stop`."""
    for n in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0


async def cut_stop_sequences(
    events: AsyncGenerator[Token | Completion, None],
    request: Request,
    count_prompt: Callable[[GenerationInput], Awaitable[int]],
) -> AsyncGenerator[Token | Completion, None]:
    """A remote backend's raw stream with the contract's stop semantics: the stop text is not in the output.

    TGI (and SageMaker's TGI container) keep the matched stop sequence in the tokens and `generated_text`,
    and match only at the end of the decoded text, so a stop that ends inside a token does not stop them.
    Text is released through a StopMatcher; when it sees a stop the server missed, the raw stream is
    closed at the next token (stopping the server) and usage is completed here: the tokens received up to
    and including the stop, and `count_prompt` for the prompt. Closing this iterator closes `events`.
    """
    stops = request.parameters.stop_sequences
    if not stops:
        async with aclosing(events):
            async for event in events:
                yield event
        return
    matcher = StopMatcher(stops)
    text: list[str] = []
    received = 0  # tokens received, the one that completed a stop included
    async with aclosing(events):
        async for event in events:
            if isinstance(event, Completion):
                finish = event.finish_reason
                if matcher.stopped:
                    finish = FinishReason.STOP_SEQUENCE
                elif rest := matcher.flush():
                    text.append(rest)
                    yield Token(rest)
                yield Completion(finish, event.prompt_tokens, event.completion_tokens, "".join(text))
                return
            if matcher.stopped:
                break  # the server generates on past the stop: close its stream now
            received += 1
            if emit := matcher.feed(event.text):
                text.append(emit)
                yield Token(emit, event.token_id, event.logprob)
        if not matcher.stopped:
            return  # the raw stream ended without a Completion: the backend reports that itself
    yield Completion(FinishReason.STOP_SEQUENCE, await count_prompt(request.input), received, "".join(text))
