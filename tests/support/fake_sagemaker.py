"""A loopback SageMaker endpoint: the runtime's streaming invoke in real AWS event-stream framing.

boto3 pointed at it with `endpoint_url` gets what SageMaker sends for an HF TGI container:
`POST /endpoints/{name}/invocations-response-stream` answers `application/vnd.amazon.eventstream`
messages (prelude with total and headers lengths and a CRC32, string headers, payload, message CRC32;
botocore.eventstream is the reference parser). Each `PayloadPart` carries raw bytes of TGI's SSE stream;
`ModelStreamError` / `InternalStreamFailure` are exception messages with a JSON body. The control plane's
DescribeEndpoint / DescribeInferenceComponent / DescribeEndpointConfig / DescribeModel (JSON 1.1, `POST /`
with X-Amz-Target) answer too, each call counted, the model's container environment carrying the limits
the TGI container was deployed with.

With `payload = "openai"` it is the Hugging Face vLLM DLC instead: OpenAI chat (`messages`) and completion
(`prompt`) bodies stream OpenAI chunks as vLLM writes them (the stop sequence cut unless
`include_stop_str_in_output`, errors as `{"error": {"message", "type", "code"}}`), a TGI body is refused
with vLLM's 400, and the container's environment carries SM_VLLM_MAX_MODEL_LEN.
"""

from __future__ import annotations

import asyncio
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

from tests.support.fake_tgi import FakeTgi, LoopbackApp, fake_chat_template, fake_tokenize, validation_error

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
        self.payload = "tgi"  # or "openai": the vLLM container (use_openai() sets its environment too)
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

    def use_openai(self) -> None:
        """Become the vLLM DLC: OpenAI payloads, its max model length in the container's environment."""
        self.payload = "openai"
        self.container_env = {
            "HF_MODEL_ID": self.model.model_id,
            "SM_VLLM_MAX_MODEL_LEN": str(self.model.max_total_tokens),
        }

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
        model_error = self.model_error
        if model_error is None and self.payload == "openai" and "inputs" in body:  # vLLM knows no TGI payload
            model_error = (400, json.dumps(_openai_error("unknown request shape", 400)))
        elif model_error is None and self.payload == "tgi" and (error := validation_error(body)):
            model_error = (422, error)
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
        events = self.model.events(body) if self.payload == "tgi" else self._openai_events(body)
        async for sse in events:
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

    async def _openai_events(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        """vLLM's OpenAI stream for a chat (`messages`) or completion (`prompt`) body, from the model's knobs."""
        model = self.model
        model.active += 1
        try:
            chat = "messages" in body
            prompt = fake_chat_template(body["messages"]) if chat else body["prompt"]
            stops = body.get("stop") or []
            plan, finish = model._plan(body.get("max_tokens") or 100, stops)
            base = {"id": "cmpl-1", "created": int(time.time()), "model": model.model_id}
            base["object"] = "chat.completion.chunk" if chat else "text_completion"
            text = ""
            for i, (_, piece, special) in enumerate(plan):
                if model.error_after is not None and i == model.error_after:
                    yield _sse(_openai_error("Request failed during generation: CUDA out of memory", 500))
                    return
                if model.token_delay_s:
                    await asyncio.sleep(model.token_delay_s)
                model.produced += 1
                last = i == len(plan) - 1
                content = "" if special else piece
                if last and finish == "stop_sequence" and not body.get("include_stop_str_in_output"):
                    stop = next(s for s in stops if (text + content).endswith(s))
                    content = (text + content)[: len(text + content) - len(stop)][len(text) :]  # vLLM cuts it
                text += content
                reason = None if not last else ("length" if finish == "length" else "stop")
                logprob = -0.25 * (i + 1)
                if chat:
                    logprobs = {"content": [{"token": piece, "logprob": logprob}]} if body.get("logprobs") else None
                    choice = {"index": 0, "delta": {"content": content}, "logprobs": logprobs, "finish_reason": reason}
                else:
                    logprobs = {"tokens": [piece], "token_logprobs": [logprob]} if body.get("logprobs") else None
                    choice = {"index": 0, "text": content, "logprobs": logprobs, "finish_reason": reason}
                yield _sse({**base, "choices": [choice]})
            if (body.get("stream_options") or {}).get("include_usage"):
                usage = {"prompt_tokens": len(fake_tokenize(prompt)), "completion_tokens": len(plan)}
                yield _sse({**base, "choices": [], "usage": usage})
            yield b"data: [DONE]\n\n"
        finally:
            model.active -= 1

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


def _sse(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def _openai_error(message: str, code: int) -> dict[str, Any]:
    kind = "BadRequestError" if code == 400 else "InternalServerError"
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _amz_json(payload: dict[str, Any]) -> Response:
    return Response(json.dumps(payload), media_type="application/x-amz-json-1.1")


def _aws_error(status: int, code: str, message: str, *, rpc: bool = False, **fields: Any) -> Response:
    """An AWS JSON error: REST services name the code in a header, JSON-RPC ones in `__type`."""
    if rpc:
        body = json.dumps({"__type": code, "message": message, **fields})
        return Response(body, status, media_type="application/x-amz-json-1.1")
    headers = {"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/"}
    return Response(json.dumps({"message": message, **fields}), status, headers=headers, media_type="application/json")
