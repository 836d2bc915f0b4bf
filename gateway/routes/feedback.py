"""POST /v1/feedback: a reader's thumbs up or down (and an optional comment) on one answer, named by its trace id.

The RAG service's ``SubmitFeedback`` turns it into a feedback score on the answer's Opik trace, exported in the
background: a 202 means accepted, not yet stored (docs/tracing.md, "Feedback").
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from gateway.deps import SettingsDep, Stub, adopt_request_id, rpc_metadata
from gateway.errors import ERROR_RESPONSES
from gateway.models import encodable
from llmtwin.rag.v1 import rag_service_pb2 as rag_pb2

# The RAG service's rules (rag_service.feedback); a test checks they agree.
MAX_COMMENT_CHARS = 1000
TRACE_ID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
RATINGS = {"up": rag_pb2.FEEDBACK_RATING_UP, "down": rag_pb2.FEEDBACK_RATING_DOWN}

Comment = Annotated[str, Field(max_length=MAX_COMMENT_CHARS), AfterValidator(encodable)]


class FeedbackRequest(BaseModel):
    """A reader's rating of one answer (SubmitFeedbackRequest)."""

    # Unknown fields and loose types are refused, as on the answer routes.
    model_config = ConfigDict(extra="forbid", strict=True)

    trace_id: str = Field(
        pattern=TRACE_ID_PATTERN,
        description="The answer's trace id (`final.trace_id` of /v1/answer, the `done` event of the stream): a UUID.",
        json_schema_extra={"format": "uuid"},
    )
    rating: Literal["up", "down"] = Field(description="Thumbs up (score 1) or down (score 0).")
    comment: Comment = Field(default="", description=f"Optional, at most {MAX_COMMENT_CHARS} characters.")


class FeedbackAccepted(BaseModel):
    """The rating is accepted; it reaches the trace store in the background."""

    status: Literal["accepted"] = "accepted"


router = APIRouter(tags=["feedback"])


@router.post("/v1/feedback", status_code=202, responses=ERROR_RESPONSES)
async def submit_feedback(
    body: FeedbackRequest, request: Request, stub: Stub, settings: SettingsDep
) -> FeedbackAccepted:
    """Rate an answer: thumbs up or down and an optional comment, recorded as a feedback score on its trace.

    Accepted (202) as soon as the RAG service queued it; an Opik outage never fails it. A well-formed trace id that
    names no trace is accepted too: only Opik knows its traces.
    """
    request_id = adopt_request_id(request)
    await stub.SubmitFeedback(
        rag_pb2.SubmitFeedbackRequest(trace_id=body.trace_id, rating=RATINGS[body.rating], comment=body.comment),
        metadata=rpc_metadata(request_id),
        timeout=settings.request_timeout_s,
    )
    return FeedbackAccepted()
