"""Protobuf ↔ domain conversion at the edge, with validation of what clients send."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llmtwin.llm.v1 import llm_service_pb2 as llm_pb
from llmtwin.rag.v1 import rag_service_pb2 as pb
from rag_service.conversation import Conversation, Role, Turn
from rag_service.errors import InvalidArgument
from rag_service.generation import Final
from rag_service.llm_client import finish_reason_to_proto
from rag_service.pipeline.sources import Source
from rag_service.rag import Options, Retrieval
from rag_service.settings import Settings
from rag_service.types import Chunk, Document, GenerationParameters, Kind, RetrievalMode, ScoredChunk
from servekit.limits import MAX_NEW_TOKENS, MAX_STOP_LENGTH, MAX_STOP_SEQUENCES, sampling_violations

KIND_TO_PB = {
    Kind.ARTICLE: pb.CONTENT_KIND_ARTICLE,
    Kind.POST: pb.CONTENT_KIND_POST,
    Kind.REPOSITORY: pb.CONTENT_KIND_REPOSITORY,
}
PB_TO_KIND = {v: k for k, v in KIND_TO_PB.items()}
PB_TO_ROLE = {pb.TURN_ROLE_USER: Role.USER, pb.TURN_ROLE_ASSISTANT: Role.ASSISTANT, pb.TURN_ROLE_SYSTEM: Role.SYSTEM}
MAX_CONVERSATION_ID = 128
PB_TO_MODE = {
    pb.RETRIEVAL_MODE_DENSE: RetrievalMode.DENSE,
    pb.RETRIEVAL_MODE_SPARSE: RetrievalMode.SPARSE,
    pb.RETRIEVAL_MODE_HYBRID: RetrievalMode.HYBRID,
}


def query_and_options(query: str, options: pb.RetrievalOptions, settings: Settings) -> tuple[str, Options]:
    """The validated query and retrieval options with defaults applied."""
    violations: list[tuple[str, str]] = []
    if not query.strip():
        violations.append(("query", "must not be empty"))
    elif len(query) > settings.max_query_chars:
        violations.append(("query", f"must have at most {settings.max_query_chars} characters"))
    top_k = options.top_k if options.HasField("top_k") else settings.top_k
    if not 1 <= top_k <= 50:
        violations.append(("options.top_k", "must be between 1 and 50"))
    expand = options.expand_queries if options.HasField("expand_queries") else settings.expand_queries
    if expand > 5:
        violations.append(("options.expand_queries", "must be between 0 and 5"))
    kinds = []
    for i, kind in enumerate(options.kinds):
        if kind not in PB_TO_KIND:
            violations.append((f"options.kinds[{i}]", "must be CONTENT_KIND_ARTICLE, _POST or _REPOSITORY"))
        else:
            kinds.append(PB_TO_KIND[kind])
    mode = RetrievalMode(settings.retrieval_mode)
    if options.retrieval_mode in PB_TO_MODE:
        mode = PB_TO_MODE[options.retrieval_mode]
    elif options.retrieval_mode != pb.RETRIEVAL_MODE_UNSPECIFIED:
        violations.append(("options.retrieval_mode", "must be RETRIEVAL_MODE_DENSE, _SPARSE or _HYBRID"))
    if violations:
        raise InvalidArgument(violations)
    return query.strip(), Options(
        top_k=top_k,
        expand_queries=expand,
        self_query=options.self_query if options.HasField("self_query") else settings.self_query,
        rerank=options.rerank if options.HasField("rerank") else True,
        author=options.author.strip(),
        kinds=tuple(dict.fromkeys(kinds)) or tuple(Kind),
        retrieval_mode=mode,
    )


def conversation_from_proto(
    history: Sequence[pb.ConversationTurn], conversation_id: str, settings: Settings
) -> Conversation:
    """The validated conversation: every violation names its turn (history[i].role / .content)."""
    violations: list[tuple[str, str]] = []
    if len(conversation_id) > MAX_CONVERSATION_ID or not all(" " <= c <= "~" for c in conversation_id):
        violations.append(("conversation_id", f"must be at most {MAX_CONVERSATION_ID} printable ASCII characters"))
    if len(history) > settings.max_history_turns:
        violations.append(
            (f"history[{settings.max_history_turns}]", f"at most {settings.max_history_turns} earlier turns")
        )
    turns: list[Turn] = []
    chars = 0
    system_at = -1
    for i, turn in enumerate(history[: settings.max_history_turns]):
        field = f"history[{i}]"
        role = PB_TO_ROLE.get(turn.role)
        if role is None:
            violations.append((f"{field}.role", "must be TURN_ROLE_USER, _ASSISTANT or _SYSTEM"))
        elif role == Role.SYSTEM:
            if system_at >= 0:
                violations.append((f"{field}.role", f"at most one system turn (history[{system_at}] is one)"))
            system_at = i
            if len(turn.content) > settings.max_instruction_chars:
                violations.append(
                    (f"{field}.content", f"a system turn has at most {settings.max_instruction_chars} characters")
                )
        if not turn.content.strip():
            violations.append((f"{field}.content", "must not be empty"))
        chars += len(turn.content)
        if chars > settings.max_history_chars and chars - len(turn.content) <= settings.max_history_chars:
            violations.append(
                (f"{field}.content", f"the history has at most {settings.max_history_chars} characters in all")
            )
        if role is not None:
            turns.append(Turn(role, turn.content.strip()))
    if violations:
        raise InvalidArgument(violations)
    return Conversation(tuple(turns), conversation_id)


def parameters_from_proto(p: llm_pb.GenerationParameters) -> GenerationParameters:
    """The answer's generation parameters, unset fields left unset; rejects values outside the LLM contract's
    ranges (servekit.limits) before any work is done.

    The LLM service checks them again against the model's own limits (prompt + max_new_tokens).
    """

    def given(name: str) -> Any:
        return getattr(p, name) if p.HasField(name) else None

    parameters = GenerationParameters(
        max_new_tokens=given("max_new_tokens"),
        temperature=given("temperature"),
        top_p=given("top_p"),
        top_k=given("top_k"),
        repetition_penalty=given("repetition_penalty"),
        stop_sequences=tuple(p.stop_sequences),
        seed=given("seed"),
        return_logprobs=p.return_logprobs,
        frequency_penalty=given("frequency_penalty"),
        presence_penalty=given("presence_penalty"),
    )
    violations = []
    if parameters.max_new_tokens is not None and not 1 <= parameters.max_new_tokens <= MAX_NEW_TOKENS:
        violations.append(("parameters.max_new_tokens", f"must be between 1 and {MAX_NEW_TOKENS}"))
    violations += sampling_violations(parameters.given())
    stops = parameters.stop_sequences
    if len(stops) > MAX_STOP_SEQUENCES or any(not 0 < len(s) <= MAX_STOP_LENGTH for s in stops):
        violations.append(
            (
                "parameters.stop_sequences",
                f"at most {MAX_STOP_SEQUENCES}, each 1 to {MAX_STOP_LENGTH} characters",
            )
        )
    if violations:
        raise InvalidArgument(violations)
    return parameters


def _origin(c: Chunk) -> dict[str, Any]:
    """The fields a retrieved chunk and its source document share in the contract."""
    return {
        "document_id": c.document_id,
        "kind": KIND_TO_PB[c.kind],
        "author_id": c.author_id,
        "author_full_name": c.author_full_name,
        "title": c.title,
        "link": c.link,
    }


def document_to_proto(hit: ScoredChunk) -> pb.RetrievedDocument:
    """A retrieved chunk as the contract shows it."""
    c = hit.chunk
    return pb.RetrievedDocument(
        **_origin(c),
        chunk_index=c.chunk_index,
        content=c.content,
        score=hit.score,
        vector_score=hit.vector_score,
    )


def source_to_proto(source: Source) -> pb.Source:
    """A source document of the context, its chunks' scores and its evidence."""
    return pb.Source(
        number=source.number,
        **_origin(source.best.chunk),
        score=source.score,
        chunks=[
            pb.SourceChunk(chunk_index=h.chunk.chunk_index, score=h.score, vector_score=h.vector_score)
            for h in source.chunks
        ],
        evidence=source.evidence,
    )


def context_to_proto(retrieval: Retrieval) -> pb.AnswerContext:
    """The context event."""
    context = pb.AnswerContext(
        documents=[document_to_proto(d) for d in retrieval.documents],
        expanded_queries=retrieval.queries,
        sources=[source_to_proto(s) for s in retrieval.sources],
        standalone_query=retrieval.standalone_query or (retrieval.queries[0] if retrieval.queries else ""),
    )
    if retrieval.author:
        context.author.CopyFrom(pb.Author(id=retrieval.author.id, full_name=retrieval.author.full_name))
    return context


def timings_to_proto(timings: dict[str, float]) -> list[pb.StepTiming]:
    """Step timings in pipeline order."""
    return [pb.StepTiming(step=step, seconds=seconds) for step, seconds in timings.items()]


def final_to_proto(final: Final) -> pb.AnswerFinal:
    """The final event."""
    return pb.AnswerFinal(
        answer=final.answer,
        finish_reason=finish_reason_to_proto(final.finish_reason),
        usage=llm_pb.Usage(
            prompt_tokens=final.prompt_tokens,
            completion_tokens=final.completion_tokens,
            total_tokens=final.prompt_tokens + final.completion_tokens,
        ),
        timings=timings_to_proto(final.timings),
        trace_id=final.trace_id,
        request_id=final.request_id,
        time_to_first_token_s=final.ttft_s,
        total_time_s=final.total_s,
        model_id=final.model_id,
        citations=[
            pb.Citation(number=s.number, document_id=s.document_id, title=s.title, link=s.link) for s in final.citations
        ],
    )


def document_from_proto(d: pb.Document) -> tuple[Document | None, str]:
    """A document to ingest, or None with the reason it is invalid."""
    problems = [
        f"{name} is required" for name in ("id", "author_id", "author_full_name") if not getattr(d, name).strip()
    ]
    if not d.content.strip():
        problems.append("content is required")
    if d.kind not in PB_TO_KIND:
        problems.append("kind must be CONTENT_KIND_ARTICLE, CONTENT_KIND_POST or CONTENT_KIND_REPOSITORY")
    if problems:
        return None, "; ".join(problems)
    return (
        Document(
            id=d.id.strip(),
            kind=PB_TO_KIND[d.kind],
            author_id=d.author_id.strip(),
            author_full_name=d.author_full_name.strip(),
            content=d.content,
            title=d.title,
            link=d.link,
        ),
        "",
    )
