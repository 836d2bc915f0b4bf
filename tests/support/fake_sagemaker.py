"""A loopback SageMaker endpoint: the runtime's streaming invoke in real AWS event-stream framing.

boto3 pointed at it with `endpoint_url` gets what SageMaker sends for an HF TGI container:
`POST /endpoints/{name}/invocations-response-stream` answers `application/vnd.amazon.eventstream`
messages (prelude with total and headers lengths and a CRC32, string headers, payload, message CRC32;
botocore.eventstream is the reference parser). Each `PayloadPart` carries raw bytes of TGI's SSE stream;
`ModelStreamError` / `InternalStreamFailure` are exception messages with a JSON body. The control plane's
DescribeEndpoint / DescribeInferenceComponent / DescribeEndpointConfig / DescribeModel (JSON 1.1, `POST /`
with X-Amz-Target) answer too, each call counted, the model's container environment carrying the limits
the TGI container was deployed with.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.support.fake_tgi import FakeTgi, LoopbackApp, validation_error

ACCOUNT = "123456789012"


def event_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message (all headers of type 7, string)."""
    raw_headers = b""
    for name, value in headers.items():
        n, v = name.encode(), value.encode()
        raw_headers += struct.pack(">B", len(n)) + n + b"\x07" + struct.pack(">H", len(v)) + v
    total = 12 + len(raw_headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(raw_headers))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + raw_headers + payload
    return message + struct.pack(">I", zlib.crc32(message))


def payload_part(data: bytes) -> bytes:
    """A PayloadPart event: its payload is the blob itself."""
    headers = {":event-type": "PayloadPart", ":content-type": "application/octet-stream", ":message-type": "event"}
    return event_message(headers, data)


def stream_exception(exception_type: str, message: str, error_code: str = "") -> bytes:
    """A modeled exception event such as ModelStreamError, with its JSON body."""
    body: dict[str, str] = {"Message": message}
    if error_code:
        body["ErrorCode"] = error_code
    headers = {":exception-type": exception_type, ":content-type": "application/json", ":message-type": "exception"}
    return event_message(headers, json.dumps(body).encode())


class FakeSageMaker(LoopbackApp):
    """A fake SageMaker endpoint fronting a FakeTgi model; set the public attributes (knobs) before a call."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Default knobs and fresh observations (a server can be shared by tests this way)."""
        self.model = FakeTgi()  # the TGI container behind the endpoint: its knobs shape the stream
        self.endpoints = {"twin-endpoint"}
        self.endpoint_status = "InService"  # also: Creating, Updating, SystemUpdating, RollingBack, Failed...
        self.component_status = "InService"  # the inference component's: Creating, Updating, Failed...
        # The deployed container's environment (DescribeModel), limits as `llm_service.deploy` sets them.
        self.container_env = {
            "HF_MODEL_ID": self.model.model_id,
            "MAX_INPUT_TOKENS": str(self.model.max_input_tokens),
            "MAX_TOTAL_TOKENS": str(self.model.max_total_tokens),
        }
        # Control-plane operation -> the AWS error code it answers (AccessDeniedException, ThrottlingException).
        self.control_errors: dict[str, str] = {}
        self.part_size: int | None = None  # cut the SSE byte stream into parts of this many bytes
        self.stream_error_after: int | None = None  # send a stream exception after this many parts
        self.stream_error = "ModelStreamError"  # or "InternalStreamFailure"
        self.model_error: tuple[int, str] | None = None  # the container answered this status and body
        # Observations.
        self.parts_sent = 0
        self.control_calls: Counter[str] = Counter()  # control-plane operation ("DescribeEndpoint"...) -> calls
        self.invocations: list[dict[str, Any]] = []  # {"endpoint", "headers", "body"} per invoke

    # -- the HTTP server -----------------------------------------------------------------------------

    def app(self) -> Starlette:
        """The ASGI app answering the runtime's streaming invoke and the control plane's describe calls."""
        return Starlette(
            routes=[
                Route("/endpoints/{name}/invocations-response-stream", self._invoke_stream, methods=["POST"]),
                Route("/", self._control_plane, methods=["POST"]),
            ]
        )

    async def _invoke_stream(self, request: Request) -> Response:
        name = request.path_params["name"]
        body = json.loads(await request.body())
        self.invocations.append({"endpoint": name, "headers": dict(request.headers), "body": body})
        if name not in self.endpoints:
            return _aws_error(400, "ValidationError", f"Endpoint {name} of account {ACCOUNT} not found.")
        model_error = self.model_error or ((422, error) if (error := validation_error(body)) else None)
        if model_error is not None:
            status, original = model_error
            message = f'Received client error ({status}) from primary with message "{original}".'
            return _aws_error(424, "ModelError", message, OriginalStatusCode=status, OriginalMessage=original)
        return StreamingResponse(
            self._frames(body),
            media_type="application/vnd.amazon.eventstream",
            headers={"X-Amzn-SageMaker-Content-Type": "text/event-stream"},
        )

    async def _frames(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        sent = 0
        async for sse in self.model.events(body):
            pieces = [sse]
            if self.part_size:
                pieces = [sse[i : i + self.part_size] for i in range(0, len(sse), self.part_size)]
            for piece in pieces:
                if self.stream_error_after is not None and sent == self.stream_error_after:
                    code = "ModelInvocationTimeExceeded" if self.stream_error == "ModelStreamError" else ""
                    yield stream_exception(self.stream_error, "Model stream timed out after 60s", code)
                    return
                sent += 1
                self.parts_sent += 1
                yield payload_part(piece)

    async def _control_plane(self, request: Request) -> Response:
        target = request.headers.get("x-amz-target", "")
        operation = target.removeprefix("SageMaker.")
        query = json.loads(await request.body())
        self.control_calls[operation] += 1
        now = time.time()
        arn = f"arn:aws:sagemaker:eu-central-1:{ACCOUNT}"
        if (code := self.control_errors.get(operation)) is not None:
            message = {
                "AccessDeniedException": f"User: arn:aws:iam::{ACCOUNT}:user/llm is not authorized to perform: "
                f"sagemaker:{operation}",
                "ThrottlingException": "Rate exceeded",
            }.get(code, code)
            return _aws_error(400, code, message, rpc=True)
        if operation == "DescribeEndpoint":
            name = query["EndpointName"]
            if name not in self.endpoints:
                return _aws_error(400, "ValidationException", f'Could not find endpoint "{name}".', rpc=True)
            return _amz_json(
                {
                    "EndpointName": name,
                    "EndpointArn": f"{arn}:endpoint/{name}",
                    "EndpointConfigName": f"{name}-config",
                    "EndpointStatus": self.endpoint_status,
                    "CreationTime": now,
                    "LastModifiedTime": now,
                }
            )
        if operation == "DescribeEndpointConfig":
            name = query["EndpointConfigName"]
            endpoint = name.removesuffix("-config")
            if endpoint not in self.endpoints:
                return _aws_error(400, "ValidationException", f'Could not find endpoint config "{name}".', rpc=True)
            variant = {"VariantName": "AllTraffic", "ModelName": f"{endpoint}-model", "InitialInstanceCount": 1}
            return _amz_json(
                {
                    "EndpointConfigName": name,
                    "EndpointConfigArn": f"{arn}:endpoint-config/{name}",
                    "ProductionVariants": [{**variant, "InstanceType": "ml.g5.2xlarge"}],
                    "CreationTime": now,
                }
            )
        if operation == "DescribeModel":
            name = query["ModelName"]
            container = {"Image": "763104351884.dkr.ecr.eu-central-1.amazonaws.com/tgi", "Mode": "SingleModel"}
            return _amz_json(
                {
                    "ModelName": name,
                    "ModelArn": f"{arn}:model/{name}",
                    "PrimaryContainer": {**container, "Environment": dict(self.container_env)},
                    "ExecutionRoleArn": f"arn:aws:iam::{ACCOUNT}:role/llmtwin-sagemaker",
                    "CreationTime": now,
                }
            )
        if operation == "DescribeInferenceComponent":
            name = query["InferenceComponentName"]
            endpoint = next(iter(self.endpoints))
            return _amz_json(
                {
                    "InferenceComponentName": name,
                    "InferenceComponentArn": f"{arn}:inference-component/{name}",
                    "EndpointName": endpoint,
                    "EndpointArn": f"{arn}:endpoint/{endpoint}",
                    "VariantName": "AllTraffic",
                    "Specification": {
                        "ModelName": f"{name}-model",
                        "ComputeResourceRequirements": {"NumberOfAcceleratorDevicesRequired": 1},
                    },
                    "RuntimeConfig": {"DesiredCopyCount": 1, "CurrentCopyCount": 1},
                    "InferenceComponentStatus": self.component_status,
                    "CreationTime": now,
                    "LastModifiedTime": now,
                }
            )
        return _aws_error(400, "UnknownOperationException", f"unknown operation {target}", rpc=True)


def _amz_json(payload: dict[str, Any]) -> Response:
    return Response(json.dumps(payload), media_type="application/x-amz-json-1.1")


def _aws_error(status: int, code: str, message: str, *, rpc: bool = False, **fields: Any) -> Response:
    """An AWS JSON error: REST services name the code in a header, JSON-RPC ones in `__type`."""
    if rpc:
        body = json.dumps({"__type": code, "message": message, **fields})
        return Response(body, status, media_type="application/x-amz-json-1.1")
    headers = {"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/"}
    return Response(json.dumps({"message": message, **fields}), status, headers=headers, media_type="application/json")
