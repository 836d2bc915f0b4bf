"""Domain types of the RAG service. Protobuf stays at the edge: convert.py for the RAG contract, llm_client.py
for the LLM contract (the generation types at the end of this module)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any


class Kind(StrEnum):
    """Content kind; each kind lives in its own collection."""

    ARTICLE = "article"
    POST = "post"
    REPOSITORY = "repository"


class RetrievalMode(StrEnum):
    """How a collection is searched: its dense vectors, its BM25 vectors, or both fused (DBSF)."""

    DENSE = "dense"
    SPARSE = "sparse"
    HYBRID = "hybrid"


@dataclass(frozen=True, slots=True)
class Document:
    """A source document as ingested."""

    id: str
    kind: Kind
    author_id: str
    author_full_name: str
    content: str
    title: str = ""
    link: str = ""


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a document, the unit that is embedded and stored."""

    document_id: str
    kind: Kind
    author_id: str
    author_full_name: str
    chunk_index: int
    content: str
    title: str = ""
    link: str = ""


@dataclass(frozen=True, slots=True)
class ScoredChunk:
    """A retrieved chunk with its scores; `score` is the ranking score, `vector_score` the search's own score:
    the cosine similarity (dense), the BM25 score (sparse) or the fused DBSF score (hybrid)."""

    chunk: Chunk
    vector_score: float
    score: float
    vector: tuple[float, ...] | None = None


@dataclass(frozen=True, slots=True)
class Author:
    """An author present in the store."""

    id: str
    full_name: str


@dataclass(frozen=True, slots=True)
class SearchFilter:
    """Payload filter of a vector search; None fields do not filter."""

    author_id: str | None = None


@dataclass(slots=True)
class IngestReport:
    """Outcome of an ingestion."""

    documents_written: int = 0
    chunks_written: int = 0
    rejected: list[tuple[int, str, str]] = field(default_factory=list)  # (index or line, document id, reason)


# The format TwinLlama was fine-tuned on (the book's instruction dataset).
ALPACA = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the "
    "request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)


@dataclass(frozen=True, slots=True)
class Prompt:
    """What is sent to the model: chat messages (role, content), or a raw prompt in a trained format."""

    messages: tuple[tuple[str, str], ...] = ()
    text: str | None = None

    @classmethod
    def instruction(cls, system: str, user: str, style: str) -> Prompt:
        """An instruction in the prompt format the model was trained with (RAG_PROMPT_FORMAT): a system and a
        user message rendered by the model's chat template ("chat"), or one Alpaca instruction ("alpaca")."""
        if style == "alpaca":
            return cls(text=ALPACA.format(instruction=f"{system}\n\n{user}"))
        return cls(messages=(("system", system), ("user", user)))


class FinishReason(StrEnum):
    """Why a generation or an answer ended; the values are the LLM contract's names (as traces show them)."""

    UNSPECIFIED = "FINISH_REASON_UNSPECIFIED"
    LENGTH = "FINISH_REASON_LENGTH"
    STOP_SEQUENCE = "FINISH_REASON_STOP_SEQUENCE"
    END_OF_SEQUENCE = "FINISH_REASON_END_OF_SEQUENCE"
    REPETITION = "FINISH_REASON_REPETITION"  # set by the loop guard, never by the LLM service


class BackendKind(StrEnum):
    """The kind of backend the LLM service runs (decides the context budget)."""

    UNSPECIFIED = "unspecified"
    EMBEDDED = "embedded"
    TGI = "tgi"
    SAGEMAKER = "sagemaker"
    ECHO = "echo"
    OPENAI = "openai"


@dataclass(frozen=True, slots=True)
class GenerationParameters:
    """Sampling and stopping parameters of a generation; None (unset) takes the next hop's default."""

    max_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    stop_sequences: tuple[str, ...] = ()
    seed: int | None = None
    return_logprobs: bool = False
    frequency_penalty: float | None = None
    presence_penalty: float | None = None

    def given(self) -> dict[str, Any]:
        """The fields that are set (not None, not empty, not False), stop sequences as a list."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["stop_sequences"] = list(self.stop_sequences)
        return {
            name: value for name, value in values.items() if value is not None and value is not False and value != []
        }


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one generation."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt and completion tokens together."""
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class Token:
    """A piece of generated text as the LLM streams it."""

    text: str


@dataclass(frozen=True, slots=True)
class Generation:
    """The end of a generation: the whole text, why it ended, usage, the model and its time to first token."""

    text: str
    finish_reason: FinishReason
    usage: Usage
    model_id: str = ""
    ttft_s: float = 0.0


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """The model the LLM service serves, its backend kind and its limits in tokens."""

    model_id: str
    backend: BackendKind
    max_input_tokens: int
    max_total_tokens: int
    adapters: tuple[str, ...] = ()  # LoRA adapters the backend serves on the base model
