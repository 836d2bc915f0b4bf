"""JSON request and response models of the gateway, named after the RAG contract, and their protobuf twins.

The request models state every rule the RAG service enforces on a request (lengths, ranges, non-blank text,
known kinds), so that the OpenAPI schema tells clients exactly what is accepted and a schema-valid request is
never refused for its shape. Only what depends on the data or the model is left to the RAG service (an author
the store does not have, a prompt that does not fit the model's context): those come back as 422s with field
violations. The query's length limit is a setting (`GATEWAY_MAX_QUERY_CHARS`, keep it equal to the RAG service's
`RAG_MAX_QUERY_CHARS`); `answer_request_model` builds the request model for a limit.

A conversation's history (earlier turns, oldest first, without the current question) is bounded as the schema says:
at most `GATEWAY_MAX_HISTORY_TURNS` turns, each 1 to `GATEWAY_MAX_QUERY_CHARS` characters and not blank, at most one
system turn (an extra instruction). Their total length is the one bound a schema cannot state: the gateway keeps the
system turn and the most recent turns that fit `GATEWAY_MAX_HISTORY_CHARS` together and drops older ones
(`fit_history`), as a chat keeps to its context window, rather than refuse a schema-valid request.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi.exceptions import RequestValidationError
from google.protobuf import json_format
from google.protobuf.message import Message
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, create_model, field_validator
from pydantic.json_schema import JsonDict

from llmtwin.rag.v1 import rag_service_pb2 as rag_pb2


def encodable(value: str) -> str:
    """The string, or ValueError when it has no UTF-8 form (what protobuf needs)."""
    # JSON can escape an unpaired surrogate ("\ud800"); such a string has no UTF-8 form for protobuf.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no unpaired surrogates)") from None
    return value


def not_blank(value: str) -> str:
    """The string, or ValueError when it is only whitespace (the RAG service strips the query)."""
    if not value.strip():
        raise ValueError("must not be blank")
    return value


# One character that is not whitespace as Python's str.strip() sees it (checked to be the same set), written out so
# that every regex dialect reading the schema (ECMA-262, Python, Rust) agrees with the server.
NOT_BLANK_PATTERN = "[^\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"

DEFAULT_MAX_QUERY_CHARS = 2000  # the RAG service's default RAG_MAX_QUERY_CHARS
# The RAG service's defaults RAG_MAX_HISTORY_TURNS and RAG_MAX_HISTORY_CHARS (the whole history's characters).
DEFAULT_MAX_HISTORY_TURNS, DEFAULT_MAX_HISTORY_CHARS = 20, 16000
MAX_INSTRUCTION_CHARS = 1000  # the RAG service's default RAG_MAX_INSTRUCTION_CHARS: the longest system turn
# The contract's ranges (rag_service.convert, llmtwin.llm.v1.GenerationParameters); a test checks they agree.
MAX_TOP_K, MAX_EXPAND_QUERIES, MAX_NEW_TOKENS, MAX_SAMPLING_TOP_K = 50, 5, 8192, 1000
MAX_STOP_SEQUENCES, MAX_STOP_LENGTH = 8, 64  # servekit.limits
# The contract's floats are 32-bit: a positive value below the smallest positive float32 would arrive as 0.
FLOAT32_MIN_POSITIVE = 2.0**-149


def whole_number(value: Any) -> Any:
    """A float with no fractional part (JSON's 3.0) as the int it is; anything else unchanged (strict checks it)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Text = Annotated[str, AfterValidator(encodable)]
# Integers a JSON number holds exactly (clients in JavaScript, and schema validators, read numbers as doubles).
JsonSafeUInt = Annotated[int, Field(ge=0, le=2**53 - 1), BeforeValidator(whole_number)]
Temperature = Annotated[float, Field(allow_inf_nan=False, ge=0, le=2)]
TopP = Annotated[float, Field(allow_inf_nan=False, ge=FLOAT32_MIN_POSITIVE, le=1)]
Penalty = Annotated[float, Field(allow_inf_nan=False, ge=-2, le=2)]
RepetitionPenalty = Annotated[float, Field(allow_inf_nan=False, ge=FLOAT32_MIN_POSITIVE, le=10)]
# Integers are written 3 or 3.0 (both are integers to JSON Schema), never "3" or true.
MaxNewTokens = Annotated[int, Field(ge=1, le=MAX_NEW_TOKENS), BeforeValidator(whole_number)]
TopK = Annotated[int, Field(ge=1, le=MAX_TOP_K), BeforeValidator(whole_number)]
ExpandQueries = Annotated[int, Field(ge=0, le=MAX_EXPAND_QUERIES), BeforeValidator(whole_number)]
SamplingTopK = Annotated[int, Field(ge=0, le=MAX_SAMPLING_TOP_K), BeforeValidator(whole_number)]
StopSequence = Annotated[str, Field(min_length=1, max_length=MAX_STOP_LENGTH), AfterValidator(encodable)]
Kind = Literal["article", "post", "repository"]
RetrievalMode = Literal["dense", "sparse", "hybrid"]
# Request ids travel as gRPC metadata: printable ASCII only.
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:\-]{1,128}$"
# A conversation id: at most 128 printable ASCII characters (the contract), empty for an answer that stands alone.
CONVERSATION_ID_PATTERN = r"^[ -~]{0,128}$"
# In the schema: at most one item of a history is a system turn.
_ONE_SYSTEM_TURN: JsonDict = {
    "contains": {"type": "object", "properties": {"role": {"const": "system"}}, "required": ["role"]},
    "minContains": 0,
    "maxContains": 1,
}


def _query_field(max_chars: int) -> Any:
    return Field(
        min_length=1,
        max_length=max_chars,
        description=f"The question: 1 to {max_chars} characters, not only whitespace.",
        json_schema_extra={"pattern": NOT_BLANK_PATTERN},
    )


Query = Annotated[str, _query_field(DEFAULT_MAX_QUERY_CHARS), AfterValidator(encodable), AfterValidator(not_blank)]


def query_type(max_chars: int) -> Any:
    """The type of a question: 1 to `max_chars` characters, not only whitespace, valid Unicode."""
    return Annotated[str, _query_field(max_chars), AfterValidator(encodable), AfterValidator(not_blank)]


class _Strict(BaseModel):
    # Unknown fields are rejected so that a typo ("topk") is an error, not a silent default; types are strict (no
    # "3" for 3, no 0 for false), as the schema states them.
    model_config = ConfigDict(extra="forbid", strict=True)


class RetrievalOptions(_Strict):
    """How to retrieve context (RetrievalOptions); unset fields take the RAG service defaults."""

    top_k: TopK | None = Field(
        default=None, description=f"Context chunks kept, 1 to {MAX_TOP_K}; unset: the RAG service's default."
    )
    expand_queries: ExpandQueries | None = Field(
        default=None, description=f"Extra queries generated, 0 to {MAX_EXPAND_QUERIES}; unset: the default."
    )
    self_query: bool | None = None
    rerank: bool | None = None
    author: Text = Field(default="", description="Author id or full name to filter by; it must be in the store.")
    kinds: list[Kind] = Field(default_factory=list)
    retrieval_mode: RetrievalMode | None = Field(
        default=None,
        description="dense (embedding cosine), sparse (BM25) or hybrid (both, DBSF-fused); unset: the RAG service's "
        "default (RAG_RETRIEVAL_MODE).",
    )


class GenerationParameters(_Strict):
    """Sampling and stopping parameters (llmtwin.llm.v1.GenerationParameters), in the contract's ranges."""

    max_new_tokens: MaxNewTokens | None = Field(
        default=None, description="1 to 8192, and prompt + max_new_tokens must fit the model's context."
    )
    temperature: Temperature | None = None
    top_p: TopP | None = Field(default=None, description="In (0, 1].")
    top_k: SamplingTopK | None = None
    repetition_penalty: RepetitionPenalty | None = Field(default=None, description="In (0, 10].")
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    stop_sequences: list[StopSequence] = Field(default_factory=list, max_length=MAX_STOP_SEQUENCES)
    seed: JsonSafeUInt | None = Field(default=None, description="0 to 2^53 - 1 (exact in JSON).")


class DialogueTurn(_Strict):
    """An earlier question (user) or answer (assistant) of the conversation (ConversationTurn)."""

    role: Literal["user", "assistant"]
    content: Query


class SystemTurn(_Strict):
    """The conversation's extra instruction (a ConversationTurn with the system role), added to the service's own."""

    role: Literal["system"]
    content: Annotated[
        str,
        Field(
            min_length=1,
            max_length=MAX_INSTRUCTION_CHARS,
            description=f"The instruction: 1 to {MAX_INSTRUCTION_CHARS} characters, not only whitespace.",
            json_schema_extra={"pattern": NOT_BLANK_PATTERN},
        ),
        AfterValidator(encodable),
        AfterValidator(not_blank),
    ]


ConversationTurn = Annotated[DialogueTurn | SystemTurn, Field(discriminator="role")]


def _history_field(max_turns: int, max_query_chars: int) -> Any:
    return Field(
        default_factory=list,
        max_length=max_turns,
        description=f"The conversation so far, oldest first, without `query`: at most {max_turns} turns, questions "
        f"and answers 1 to {max_query_chars} characters each, at most one system turn (an extra instruction, 1 to "
        f"{MAX_INSTRUCTION_CHARS} characters). When the turns are longer than the gateway's history budget "
        "(GATEWAY_MAX_HISTORY_CHARS) together, the oldest questions and answers are left out; the system turn stays.",
        json_schema_extra=_ONE_SYSTEM_TURN,
    )


def _one_system_turn(history: list[ConversationTurn]) -> list[ConversationTurn]:
    if sum(turn.role == "system" for turn in history) > 1:
        raise ValueError("must have at most one system turn")
    return history


class AnswerRequest(_Strict):
    """A question to answer (AnswerRequest), alone or as the next turn of a conversation."""

    query: Query
    options: RetrievalOptions = Field(default_factory=RetrievalOptions)
    parameters: GenerationParameters = Field(default_factory=GenerationParameters)
    request_id: str = Field(default="", pattern=r"^$|" + REQUEST_ID_PATTERN)
    history: list[ConversationTurn] = _history_field(DEFAULT_MAX_HISTORY_TURNS, DEFAULT_MAX_QUERY_CHARS)
    conversation_id: str = Field(
        default="",
        pattern=CONVERSATION_ID_PATTERN,
        description="Groups the answers of one conversation (any id the client chooses, e.g. a UUID): at most 128 "
        "printable ASCII characters; empty: the answer stands alone.",
    )

    @field_validator("history")
    @classmethod
    def _at_most_one_system_turn(cls, value: list[ConversationTurn]) -> list[ConversationTurn]:
        return _one_system_turn(value)


def answer_request_model(
    max_query_chars: int, max_history_turns: int = DEFAULT_MAX_HISTORY_TURNS
) -> type[AnswerRequest]:
    """AnswerRequest with these limits (the gateway's settings) on the question and on the history."""
    if (max_query_chars, max_history_turns) == (DEFAULT_MAX_QUERY_CHARS, DEFAULT_MAX_HISTORY_TURNS):
        return AnswerRequest
    dialogue = create_model("DialogueTurn", __base__=DialogueTurn, content=(query_type(max_query_chars), ...))
    turn = Annotated[dialogue | SystemTurn, Field(discriminator="role")]  # type: ignore[valid-type]
    return create_model(
        "AnswerRequest",
        __base__=AnswerRequest,
        query=(query_type(max_query_chars), ...),
        history=(list[turn], _history_field(max_history_turns, max_query_chars)),  # type: ignore[valid-type]
    )


def fit_history(
    history: list[ConversationTurn],
    max_turns: int = DEFAULT_MAX_HISTORY_TURNS,
    max_chars: int = DEFAULT_MAX_HISTORY_CHARS,
) -> list[ConversationTurn]:
    """The history within its bounds: the system turn, then the most recent other turns that fit `max_turns` turns
    and `max_chars` characters together; older ones are left out, and so is an answer whose question was."""
    system = [turn for turn in history if turn.role == "system"][:1]
    budget_turns = max_turns - len(system)
    budget_chars = max_chars - sum(len(turn.content) for turn in system)
    if budget_chars < 0:  # an instruction longer than the whole budget is left out rather than refused
        system, budget_turns, budget_chars = [], max_turns, max_chars
    dialogue = [turn for turn in history if turn.role != "system"]
    kept: list[ConversationTurn] = []
    for turn in reversed(dialogue):
        if len(kept) == budget_turns or len(turn.content) > budget_chars:
            break
        kept.append(turn)
        budget_chars -= len(turn.content)
    kept.reverse()
    while len(kept) < len(dialogue) and kept and kept[0].role == "assistant":
        kept.pop(0)  # its question was left out
    return system + kept


class Document(BaseModel):
    """One retrieved context chunk (RetrievedDocument)."""

    document_id: str = ""
    kind: str = "unspecified"
    author_id: str = ""
    author_full_name: str = ""
    title: str = ""
    link: str = ""
    chunk_index: int = 0
    content: str = ""
    score: float = 0.0
    vector_score: float = 0.0


class Author(BaseModel):
    """An author found in the store."""

    id: str = ""
    full_name: str = ""


class SourceChunk(BaseModel):
    """One retrieved chunk of a source document and its scores."""

    chunk_index: int = 0
    score: float = 0.0
    vector_score: float = 0.0


class Source(BaseModel):
    """One source document of the context, numbered as the prompt numbers it (the answer cites it as [number])."""

    number: int = 0
    document_id: str = ""
    kind: str = "unspecified"
    author_id: str = ""
    author_full_name: str = ""
    title: str = ""
    link: str = ""
    score: float = 0.0
    chunks: list[SourceChunk] = Field(default_factory=list)
    evidence: str = ""


class AnswerContext(BaseModel):
    """The context used for an answer: documents best first, the queries searched, the author filter, and the
    documents grouped into numbered sources."""

    documents: list[Document] = Field(default_factory=list)
    expanded_queries: list[str] = Field(default_factory=list)
    author: Author | None = None
    sources: list[Source] = Field(default_factory=list)
    standalone_query: str = Field(
        default="", description="The question as retrieval searched it: a follow-up rewritten as a standalone question."
    )


class Usage(BaseModel):
    """Token counts of the answer's generation."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class StepTiming(BaseModel):
    """Time spent in one pipeline step, in seconds."""

    step: str = ""
    seconds: float = 0.0


class Citation(BaseModel):
    """A source the answer cites with a [number] marker."""

    number: int = 0
    document_id: str = ""
    title: str = ""
    link: str = ""


class AnswerFinal(BaseModel):
    """The end of an answer: the full text, why it ended, usage, timings and the sources it cites."""

    answer: str = ""
    finish_reason: str = "unspecified"
    usage: Usage = Field(default_factory=Usage)
    timings: list[StepTiming] = Field(default_factory=list)
    trace_id: str = ""
    request_id: str = ""
    time_to_first_token_s: float = 0.0
    total_time_s: float = 0.0
    model_id: str = ""
    citations: list[Citation] = Field(default_factory=list)


class AnswerResponse(BaseModel):
    """The whole answer: its context and its final message."""

    context: AnswerContext
    final: AnswerFinal


def answer_request_to_proto(
    request: AnswerRequest, max_history_chars: int = DEFAULT_MAX_HISTORY_CHARS
) -> rag_pb2.AnswerRequest:
    """The gRPC AnswerRequest for a JSON one, its history fitted to `max_history_chars` (fit_history); the request
    id travels as metadata (gateway.deps.rpc_metadata)."""
    data = request.model_dump(exclude_none=True, exclude={"request_id", "history"})
    history = fit_history(request.history, max_turns=len(request.history), max_chars=max_history_chars)
    data["history"] = [{"role": f"TURN_ROLE_{turn.role.upper()}", "content": turn.content} for turn in history]
    data["options"]["kinds"] = [f"CONTENT_KIND_{kind.upper()}" for kind in request.options.kinds]
    if request.options.retrieval_mode is not None:
        data["options"]["retrieval_mode"] = f"RETRIEVAL_MODE_{request.options.retrieval_mode.upper()}"
    try:
        return json_format.ParseDict(data, rag_pb2.AnswerRequest())
    except json_format.ParseError as error:
        # The models above should let nothing untranslatable through; if one does, it is still the caller's 422.
        path = re.search(r" at AnswerRequest\.([\w.\[\]]+)", str(error))
        loc = ("body", *(path.group(1).split(".") if path else ()))
        raise RequestValidationError([{"loc": loc, "msg": str(error), "type": "value_error"}]) from error


def context_from_proto(context: rag_pb2.AnswerContext) -> AnswerContext:
    """The JSON view of an AnswerContext; enum values as short lower-case names ("article")."""
    data = _to_dict(context)
    for item in [*data.get("documents", []), *data.get("sources", [])]:
        item["kind"] = _short(item.get("kind", ""), "CONTENT_KIND_")
    return AnswerContext.model_validate(data)


def final_from_proto(final: rag_pb2.AnswerFinal) -> AnswerFinal:
    """The JSON view of an AnswerFinal; finish_reason as a short name ("length", "end_of_sequence")."""
    data = _to_dict(final)
    data["finish_reason"] = _short(data.get("finish_reason", ""), "FINISH_REASON_")
    return AnswerFinal.model_validate(data)


def answer_from_proto(response: rag_pb2.AnswerResponse) -> AnswerResponse:
    """The JSON view of an AnswerResponse."""
    return AnswerResponse(context=context_from_proto(response.context), final=final_from_proto(response.final))


def _to_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _short(enum_name: str, prefix: str) -> str:
    return enum_name.removeprefix(prefix).lower() or "unspecified"
