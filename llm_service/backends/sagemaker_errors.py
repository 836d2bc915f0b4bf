"""boto3 / botocore / urllib3 exceptions of the SageMaker APIs as service errors."""

from __future__ import annotations

import json

import urllib3
from botocore.exceptions import BotoCoreError, ClientError, EventStreamError

from llm_service.backends.tgi_payload import error_from_status
from llm_service.errors import BackendError, BackendUnavailable, InvalidArgument, Overloaded, ServiceError


def map_error(exc: BaseException, endpoint: str) -> ServiceError:
    """The service error for a boto3 / botocore / urllib3 exception."""
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, EventStreamError):  # mid-stream: ModelStreamError, InternalStreamFailure
        error = exc.response.get("Error", {})
        return BackendError(f"SageMaker stream failed ({error.get('Code')}): {error.get('Message')}")
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code", "")), str(error.get("Message", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code == "ModelError":  # the container answered an error status: judge by that status
            original = exc.response.get("OriginalStatusCode")
            status = original if isinstance(original, int) else 500
            body = str(exc.response.get("OriginalMessage") or message)
            if status == 400:  # OpenAI servers (vLLM) refuse a request with 400 where TGI says 422
                return InvalidArgument({"parameters": _openai_message(body)})
            return error_from_status(status, body)
        if code.startswith("Validation"):
            if "not found" in message.lower() or "could not find" in message.lower():
                return BackendUnavailable(f"SageMaker endpoint {endpoint} not found: {message}")
            return InvalidArgument({"parameters": message})
        if status == 429 or "Throttl" in code or code == "TooManyRequestsException":
            return Overloaded(f"SageMaker is throttling: {message}")
        if status in (401, 403):  # DescribeEndpoint denied: see check_endpoint_status
            return BackendUnavailable(f"not allowed to use SageMaker endpoint {endpoint} ({code}): {message}")
        if status == 503 or code == "ServiceUnavailable":
            return BackendUnavailable(f"SageMaker endpoint {endpoint} is unavailable ({code}): {message}")
        return BackendError(f"SageMaker failed ({code}): {message}")
    if isinstance(exc, BotoCoreError | urllib3.exceptions.HTTPError | OSError):
        # Refused, timed out, connection dropped mid-stream, no credentials.
        return BackendUnavailable(f"SageMaker endpoint {endpoint} is unreachable: {exc}")
    return BackendError(f"SageMaker call failed: {exc!r}")


def _openai_message(body: str) -> str:
    """The message of an OpenAI error body ({"error": {"message"}}, or vLLM's flat {"message"}), else the body."""
    try:
        payload = json.loads(body)
    except ValueError:
        return body
    if not isinstance(payload, dict):
        return body
    error = payload.get("error")
    return str((error if isinstance(error, dict) else payload).get("message") or body)
