"""Domain types of the LLM service: what backends take and yield. Protobuf stays at the edge (convert.py)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class FinishReason(Enum):
    """Why a generation ended."""

    UNSPECIFIED = 0
    LENGTH = 1
    STOP_SEQUENCE = 2
    END_OF_SEQUENCE = 3


@dataclass(frozen=True, slots=True)
class Message:
    """One chat turn; role is "system", "user" or "assistant"."""

    role: str
    content: str


@dataclass(frozen=True, slots=True)
class Parameters:
    """Sampling and stopping parameters, validated and with defaults filled in."""

    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    stop_sequences: tuple[str, ...] = ()
    seed: int | None = None
    return_logprobs: bool = False


@dataclass(frozen=True, slots=True)
class GenerationInput:
    """A raw prompt or chat messages (exactly one is set)."""

    prompt: str | None = None
    messages: tuple[Message, ...] | None = None


@dataclass(frozen=True, slots=True)
class Request:
    """One generation request as backends see it."""

    input: GenerationInput
    parameters: Parameters
    request_id: str
    adapter: str = ""  # a LoRA adapter the backend serves (ModelInfo.adapters); "": the base model


@dataclass(slots=True)  # not frozen: one is built per generated token, and frozen __init__ costs ~3x
class Token:
    """A generated piece of text (one token, or a few when the backend merges them)."""

    text: str
    token_id: int | None = None
    logprob: float | None = None


@dataclass(slots=True)
class Completion:
    """The end of a generation, as a backend reports it."""

    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    text: str = ""


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """The served model and its limits."""

    model_id: str
    backend: str  # "embedded" | "tgi" | "sagemaker" | "echo"
    max_input_tokens: int
    max_total_tokens: int
    model_revision: str = ""
    adapters: tuple[str, ...] = ()  # LoRA adapters served on the base model, by name
