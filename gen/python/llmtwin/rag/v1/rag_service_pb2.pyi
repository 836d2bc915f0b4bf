from llmtwin.llm.v1 import llm_service_pb2 as _llm_service_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ContentKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONTENT_KIND_UNSPECIFIED: _ClassVar[ContentKind]
    CONTENT_KIND_ARTICLE: _ClassVar[ContentKind]
    CONTENT_KIND_POST: _ClassVar[ContentKind]
    CONTENT_KIND_REPOSITORY: _ClassVar[ContentKind]

class RetrievalMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RETRIEVAL_MODE_UNSPECIFIED: _ClassVar[RetrievalMode]
    RETRIEVAL_MODE_DENSE: _ClassVar[RetrievalMode]
    RETRIEVAL_MODE_SPARSE: _ClassVar[RetrievalMode]
    RETRIEVAL_MODE_HYBRID: _ClassVar[RetrievalMode]

class TurnRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TURN_ROLE_UNSPECIFIED: _ClassVar[TurnRole]
    TURN_ROLE_USER: _ClassVar[TurnRole]
    TURN_ROLE_ASSISTANT: _ClassVar[TurnRole]
    TURN_ROLE_SYSTEM: _ClassVar[TurnRole]

class FeedbackRating(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEEDBACK_RATING_UNSPECIFIED: _ClassVar[FeedbackRating]
    FEEDBACK_RATING_UP: _ClassVar[FeedbackRating]
    FEEDBACK_RATING_DOWN: _ClassVar[FeedbackRating]
CONTENT_KIND_UNSPECIFIED: ContentKind
CONTENT_KIND_ARTICLE: ContentKind
CONTENT_KIND_POST: ContentKind
CONTENT_KIND_REPOSITORY: ContentKind
RETRIEVAL_MODE_UNSPECIFIED: RetrievalMode
RETRIEVAL_MODE_DENSE: RetrievalMode
RETRIEVAL_MODE_SPARSE: RetrievalMode
RETRIEVAL_MODE_HYBRID: RetrievalMode
TURN_ROLE_UNSPECIFIED: TurnRole
TURN_ROLE_USER: TurnRole
TURN_ROLE_ASSISTANT: TurnRole
TURN_ROLE_SYSTEM: TurnRole
FEEDBACK_RATING_UNSPECIFIED: FeedbackRating
FEEDBACK_RATING_UP: FeedbackRating
FEEDBACK_RATING_DOWN: FeedbackRating

class RetrievalOptions(_message.Message):
    __slots__ = ("top_k", "expand_queries", "self_query", "rerank", "author", "kinds", "retrieval_mode")
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    EXPAND_QUERIES_FIELD_NUMBER: _ClassVar[int]
    SELF_QUERY_FIELD_NUMBER: _ClassVar[int]
    RERANK_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_MODE_FIELD_NUMBER: _ClassVar[int]
    top_k: int
    expand_queries: int
    self_query: bool
    rerank: bool
    author: str
    kinds: _containers.RepeatedScalarFieldContainer[ContentKind]
    retrieval_mode: RetrievalMode
    def __init__(self, top_k: _Optional[int] = ..., expand_queries: _Optional[int] = ..., self_query: bool = ..., rerank: bool = ..., author: _Optional[str] = ..., kinds: _Optional[_Iterable[_Union[ContentKind, str]]] = ..., retrieval_mode: _Optional[_Union[RetrievalMode, str]] = ...) -> None: ...

class AnswerRequest(_message.Message):
    __slots__ = ("query", "options", "parameters", "request_id", "history", "conversation_id")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    query: str
    options: RetrievalOptions
    parameters: _llm_service_pb2.GenerationParameters
    request_id: str
    history: _containers.RepeatedCompositeFieldContainer[ConversationTurn]
    conversation_id: str
    def __init__(self, query: _Optional[str] = ..., options: _Optional[_Union[RetrievalOptions, _Mapping]] = ..., parameters: _Optional[_Union[_llm_service_pb2.GenerationParameters, _Mapping]] = ..., request_id: _Optional[str] = ..., history: _Optional[_Iterable[_Union[ConversationTurn, _Mapping]]] = ..., conversation_id: _Optional[str] = ...) -> None: ...

class ConversationTurn(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: TurnRole
    content: str
    def __init__(self, role: _Optional[_Union[TurnRole, str]] = ..., content: _Optional[str] = ...) -> None: ...

class SubmitFeedbackRequest(_message.Message):
    __slots__ = ("trace_id", "rating", "comment")
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    rating: FeedbackRating
    comment: str
    def __init__(self, trace_id: _Optional[str] = ..., rating: _Optional[_Union[FeedbackRating, str]] = ..., comment: _Optional[str] = ...) -> None: ...

class SubmitFeedbackResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RetrievedDocument(_message.Message):
    __slots__ = ("document_id", "kind", "author_id", "author_full_name", "title", "link", "chunk_index", "content", "score", "vector_score")
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_ID_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FULL_NAME_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    LINK_FIELD_NUMBER: _ClassVar[int]
    CHUNK_INDEX_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    VECTOR_SCORE_FIELD_NUMBER: _ClassVar[int]
    document_id: str
    kind: ContentKind
    author_id: str
    author_full_name: str
    title: str
    link: str
    chunk_index: int
    content: str
    score: float
    vector_score: float
    def __init__(self, document_id: _Optional[str] = ..., kind: _Optional[_Union[ContentKind, str]] = ..., author_id: _Optional[str] = ..., author_full_name: _Optional[str] = ..., title: _Optional[str] = ..., link: _Optional[str] = ..., chunk_index: _Optional[int] = ..., content: _Optional[str] = ..., score: _Optional[float] = ..., vector_score: _Optional[float] = ...) -> None: ...

class Author(_message.Message):
    __slots__ = ("id", "full_name")
    ID_FIELD_NUMBER: _ClassVar[int]
    FULL_NAME_FIELD_NUMBER: _ClassVar[int]
    id: str
    full_name: str
    def __init__(self, id: _Optional[str] = ..., full_name: _Optional[str] = ...) -> None: ...

class StepTiming(_message.Message):
    __slots__ = ("step", "seconds")
    STEP_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    step: str
    seconds: float
    def __init__(self, step: _Optional[str] = ..., seconds: _Optional[float] = ...) -> None: ...

class AnswerContext(_message.Message):
    __slots__ = ("documents", "expanded_queries", "author", "sources", "standalone_query")
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    EXPANDED_QUERIES_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    STANDALONE_QUERY_FIELD_NUMBER: _ClassVar[int]
    documents: _containers.RepeatedCompositeFieldContainer[RetrievedDocument]
    expanded_queries: _containers.RepeatedScalarFieldContainer[str]
    author: Author
    sources: _containers.RepeatedCompositeFieldContainer[Source]
    standalone_query: str
    def __init__(self, documents: _Optional[_Iterable[_Union[RetrievedDocument, _Mapping]]] = ..., expanded_queries: _Optional[_Iterable[str]] = ..., author: _Optional[_Union[Author, _Mapping]] = ..., sources: _Optional[_Iterable[_Union[Source, _Mapping]]] = ..., standalone_query: _Optional[str] = ...) -> None: ...

class SourceChunk(_message.Message):
    __slots__ = ("chunk_index", "score", "vector_score")
    CHUNK_INDEX_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    VECTOR_SCORE_FIELD_NUMBER: _ClassVar[int]
    chunk_index: int
    score: float
    vector_score: float
    def __init__(self, chunk_index: _Optional[int] = ..., score: _Optional[float] = ..., vector_score: _Optional[float] = ...) -> None: ...

class Source(_message.Message):
    __slots__ = ("number", "document_id", "kind", "author_id", "author_full_name", "title", "link", "score", "chunks", "evidence")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_ID_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FULL_NAME_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    LINK_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    number: int
    document_id: str
    kind: ContentKind
    author_id: str
    author_full_name: str
    title: str
    link: str
    score: float
    chunks: _containers.RepeatedCompositeFieldContainer[SourceChunk]
    evidence: str
    def __init__(self, number: _Optional[int] = ..., document_id: _Optional[str] = ..., kind: _Optional[_Union[ContentKind, str]] = ..., author_id: _Optional[str] = ..., author_full_name: _Optional[str] = ..., title: _Optional[str] = ..., link: _Optional[str] = ..., score: _Optional[float] = ..., chunks: _Optional[_Iterable[_Union[SourceChunk, _Mapping]]] = ..., evidence: _Optional[str] = ...) -> None: ...

class Citation(_message.Message):
    __slots__ = ("number", "document_id", "title", "link")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    LINK_FIELD_NUMBER: _ClassVar[int]
    number: int
    document_id: str
    title: str
    link: str
    def __init__(self, number: _Optional[int] = ..., document_id: _Optional[str] = ..., title: _Optional[str] = ..., link: _Optional[str] = ...) -> None: ...

class AnswerDelta(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class AnswerFinal(_message.Message):
    __slots__ = ("answer", "finish_reason", "usage", "timings", "trace_id", "request_id", "time_to_first_token_s", "total_time_s", "model_id", "citations")
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_TOKEN_S_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TIME_S_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    CITATIONS_FIELD_NUMBER: _ClassVar[int]
    answer: str
    finish_reason: _llm_service_pb2.FinishReason
    usage: _llm_service_pb2.Usage
    timings: _containers.RepeatedCompositeFieldContainer[StepTiming]
    trace_id: str
    request_id: str
    time_to_first_token_s: float
    total_time_s: float
    model_id: str
    citations: _containers.RepeatedCompositeFieldContainer[Citation]
    def __init__(self, answer: _Optional[str] = ..., finish_reason: _Optional[_Union[_llm_service_pb2.FinishReason, str]] = ..., usage: _Optional[_Union[_llm_service_pb2.Usage, _Mapping]] = ..., timings: _Optional[_Iterable[_Union[StepTiming, _Mapping]]] = ..., trace_id: _Optional[str] = ..., request_id: _Optional[str] = ..., time_to_first_token_s: _Optional[float] = ..., total_time_s: _Optional[float] = ..., model_id: _Optional[str] = ..., citations: _Optional[_Iterable[_Union[Citation, _Mapping]]] = ...) -> None: ...

class AnswerStreamResponse(_message.Message):
    __slots__ = ("context", "delta", "final")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    context: AnswerContext
    delta: AnswerDelta
    final: AnswerFinal
    def __init__(self, context: _Optional[_Union[AnswerContext, _Mapping]] = ..., delta: _Optional[_Union[AnswerDelta, _Mapping]] = ..., final: _Optional[_Union[AnswerFinal, _Mapping]] = ...) -> None: ...

class AnswerResponse(_message.Message):
    __slots__ = ("context", "final")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    context: AnswerContext
    final: AnswerFinal
    def __init__(self, context: _Optional[_Union[AnswerContext, _Mapping]] = ..., final: _Optional[_Union[AnswerFinal, _Mapping]] = ...) -> None: ...

class RetrieveRequest(_message.Message):
    __slots__ = ("query", "options", "request_id")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    query: str
    options: RetrievalOptions
    request_id: str
    def __init__(self, query: _Optional[str] = ..., options: _Optional[_Union[RetrievalOptions, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class RetrieveResponse(_message.Message):
    __slots__ = ("context", "timings")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    context: AnswerContext
    timings: _containers.RepeatedCompositeFieldContainer[StepTiming]
    def __init__(self, context: _Optional[_Union[AnswerContext, _Mapping]] = ..., timings: _Optional[_Iterable[_Union[StepTiming, _Mapping]]] = ...) -> None: ...

class Document(_message.Message):
    __slots__ = ("id", "kind", "author_id", "author_full_name", "content", "title", "link")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_ID_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FULL_NAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    LINK_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: ContentKind
    author_id: str
    author_full_name: str
    content: str
    title: str
    link: str
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[_Union[ContentKind, str]] = ..., author_id: _Optional[str] = ..., author_full_name: _Optional[str] = ..., content: _Optional[str] = ..., title: _Optional[str] = ..., link: _Optional[str] = ...) -> None: ...

class IngestDocumentsRequest(_message.Message):
    __slots__ = ("document",)
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    document: Document
    def __init__(self, document: _Optional[_Union[Document, _Mapping]] = ...) -> None: ...

class RejectedDocument(_message.Message):
    __slots__ = ("index", "document_id", "reason")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    index: int
    document_id: str
    reason: str
    def __init__(self, index: _Optional[int] = ..., document_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class IngestDocumentsResponse(_message.Message):
    __slots__ = ("documents_written", "chunks_written", "rejected")
    DOCUMENTS_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    documents_written: int
    chunks_written: int
    rejected: _containers.RepeatedCompositeFieldContainer[RejectedDocument]
    def __init__(self, documents_written: _Optional[int] = ..., chunks_written: _Optional[int] = ..., rejected: _Optional[_Iterable[_Union[RejectedDocument, _Mapping]]] = ...) -> None: ...
