"""JSON request and response models of the gateway, named after the RAG contract, and their protobuf twins.

Validation here is only what the translation needs (types, unsigned ranges, known kinds); the RAG
service validates the meaning of every field and its errors come back as 422s with field violations.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi.exceptions import RequestValidationError
from google.protobuf import json_format
from google.protobuf.message import Message
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from llmtwin.rag.v1 import rag_service_pb2 as rag_pb2


def encodable(value: str) -> str:
    """The string, or ValueError when it has no UTF-8 form (what protobuf needs)."""
    # JSON can escape an unpaired surrogate ("\ud800"); such a string has no UTF-8 form for protobuf.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no unpaired surrogates)") from None
    return value


Text = Annotated[str, AfterValidator(encodable)]
# The contract's floats are 32-bit: finite and within float32's range (no valid value comes near its edge).
Float32 = Annotated[float, Field(allow_inf_nan=False, ge=-3.4e38, le=3.4e38)]
UInt32 = Annotated[int, Field(ge=0, le=2**32 - 1)]
UInt64 = Annotated[int, Field(ge=0, le=2**64 - 1)]
Kind = Literal["article", "post", "repository"]
# Request ids travel as gRPC metadata: printable ASCII only.
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:\-]{1,128}$"


class _Strict(BaseModel):
    # Unknown fields are rejected so that a typo ("topk") is an error, not a silent default.
    model_config = ConfigDict(extra="forbid")


class RetrievalOptions(_Strict):
    """How to retrieve context (RetrievalOptions); unset fields take the RAG service defaults."""

    top_k: UInt32 | None = None
    expand_queries: UInt32 | None = None
    self_query: bool | None = None
    rerank: bool | None = None
    author: Text = ""
    kinds: list[Kind] = Field(default_factory=list)


class GenerationParameters(_Strict):
    """Sampling and stopping parameters (llmtwin.llm.v1.GenerationParameters)."""

    max_new_tokens: UInt32 | None = None
    temperature: Float32 | None = None
    top_p: Float32 | None = None
    top_k: UInt32 | None = None
    repetition_penalty: Float32 | None = None
    frequency_penalty: Float32 | None = None
    presence_penalty: Float32 | None = None
    stop_sequences: list[Text] = Field(default_factory=list)
    seed: UInt64 | None = None


class AnswerRequest(_Strict):
    """A question to answer (AnswerRequest)."""

    query: Text
    options: RetrievalOptions = Field(default_factory=RetrievalOptions)
    parameters: GenerationParameters = Field(default_factory=GenerationParameters)
    request_id: str = Field(default="", pattern=r"^$|" + REQUEST_ID_PATTERN)


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


def answer_request_to_proto(request: AnswerRequest, request_id: str) -> rag_pb2.AnswerRequest:
    """The gRPC AnswerRequest for a JSON one, carrying the gateway's request id."""
    data = request.model_dump(exclude_none=True)
    data["options"]["kinds"] = [f"CONTENT_KIND_{kind.upper()}" for kind in request.options.kinds]
    data["request_id"] = request_id
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
