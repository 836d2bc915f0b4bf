"""SageMaker backend: a SageMaker real-time endpoint running the Hugging Face TGI or vLLM container, streamed.

The request and its events are the container's payloads, TGI's or OpenAI's (sagemaker_payload); the
response stream is pumped off boto3's blocking event stream by sagemaker_stream; health and the deployed
token limits come from the control plane (sagemaker_endpoint). The token limits are the deployed ones
unless set explicitly; the configured fallbacks apply when the deployment does not say. LoRA adapters
are inference components on the base one: a request naming an adapter invokes its component.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Mapping
from dataclasses import replace
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError

from llm_service.backends.sagemaker_endpoint import EndpointStatusCache, deployed_limits
from llm_service.backends.sagemaker_payload import PAYLOADS, PayloadKind, invocation
from llm_service.backends.sagemaker_stream import SseLines, StreamPump, parse_event
from llm_service.backends.tgi_payload import estimate_tokens, plain_chat_text
from llm_service.errors import BackendUnavailable, InvalidArgument, ServiceError
from llm_service.stops import cut_stop_sequences
from llm_service.types import Completion, GenerationInput, ModelInfo, Request, Token

log = logging.getLogger(__name__)


def parse_adapters(text: str) -> dict[str, str]:
    """LLM_SAGEMAKER_ADAPTERS ("name=component,name2=component2") as {name: component}; ValueError if malformed."""
    adapters: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, component = (x.strip() for x in item.partition("="))
        if not (sep and name and component) or name in adapters:
            raise ValueError(f"LLM_SAGEMAKER_ADAPTERS: expected unique name=component pairs, got {item!r}")
        adapters[name] = component
    return adapters


class SageMakerBackend:
    """A SageMaker endpoint (optionally one inference component of it) serving TGI's or OpenAI's payloads.

    `payload` is what the container speaks: "tgi" (the HF TGI DLC) or "openai" (the HF vLLM DLC, LMI).
    `adapters` maps LoRA adapter names (Request.adapter, ModelInfo.adapters) to their adapter inference
    components on the same endpoint; "" (no adapter) invokes the base component.

    Credentials and region come the usual boto3 way (env, profile, instance role) or from `session`.
    `endpoint_url` overrides where both the runtime and the control-plane calls go (tests, local fakes).
    Health and start use DescribeEndpoint (a status in sagemaker_endpoint.SERVING_ENDPOINT_STATUSES), which needs
    `sagemaker:DescribeEndpoint` besides `sagemaker:InvokeEndpoint`; one answer serves every check for
    `status_ttl_s`, and concurrent checks share one call. With `check_endpoint_status=False` they only
    check that the clients are built, and the first generation reveals a missing endpoint.

    `max_input_tokens` / `max_total_tokens` override the deployed limits; `fallback_max_*` apply when the
    deployment cannot be read (no `sagemaker:DescribeEndpointConfig` / `DescribeModel` permission, or a
    container without those variables).
    """

    def __init__(
        self,
        endpoint_name: str,
        *,
        inference_component_name: str | None = None,
        payload: PayloadKind = "tgi",
        adapters: Mapping[str, str] | None = None,
        region: str | None = None,
        endpoint_url: str | None = None,
        model_id: str = "",
        max_input_tokens: int | None = None,
        max_total_tokens: int | None = None,
        fallback_max_input_tokens: int = 2048,
        fallback_max_total_tokens: int = 4096,
        tokenizer_path: str | None = None,
        session: boto3.session.Session | None = None,
        check_endpoint_status: bool = True,
        status_ttl_s: float = 30.0,
        timeout_s: float = 60.0,
        max_attempts: int = 2,
    ) -> None:
        if payload not in PAYLOADS:
            raise ValueError(f"unknown SageMaker payload {payload!r}: one of {', '.join(PAYLOADS)}")
        self._endpoint = endpoint_name
        self._component = inference_component_name
        self._payload = payload
        self._adapters = dict(adapters or {})
        self._region = region
        self._endpoint_url = endpoint_url
        self._tokenizer_path = tokenizer_path
        self._session = session
        self._check_status = check_endpoint_status
        self._limits_override = (max_input_tokens, max_total_tokens)
        self._statuses = EndpointStatusCache(endpoint_name, inference_component_name, status_ttl_s)
        # No SDK retry once a stream has started (it is not resumable); max_attempts covers refused
        # connections and throttling before it. timeout_s bounds each wait between two reads.
        self._config = Config(
            connect_timeout=min(timeout_s, 10.0),
            read_timeout=timeout_s,
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            max_pool_connections=64,  # one connection per concurrent stream
        )
        self._info = ModelInfo(
            model_id or endpoint_name,
            "sagemaker",
            max_input_tokens or fallback_max_input_tokens,
            max_total_tokens or fallback_max_total_tokens,
            adapters=tuple(self._adapters),
        )
        self.limits_from = "settings"  # where the token limits came from, once started
        self._runtime: Any = None
        self._control: Any = None
        self._tokenizer: Any = None

    async def start(self) -> None:
        """Build the boto3 clients (and the tokenizer) off the loop, check the endpoint serves, read its limits."""
        try:
            await asyncio.to_thread(self._build)
        except BotoCoreError as exc:  # no region, broken profile...
            raise BackendUnavailable(f"cannot configure the SageMaker client: {exc}") from exc
        if self._check_status:
            status = await self._statuses.get(self._control)
            if not status.serving:
                raise BackendUnavailable(f"SageMaker endpoint {self._endpoint} is {status}: it does not serve")
        if None in self._limits_override:
            await asyncio.to_thread(self._apply_deployed_limits)

    def _build(self) -> None:
        session = self._session or boto3.session.Session()
        where = {"region_name": self._region, "endpoint_url": self._endpoint_url}
        self._runtime = session.client("sagemaker-runtime", **where, config=self._config)  # type: ignore[call-overload]
        self._control = session.client("sagemaker", **where, config=self._config)  # type: ignore[call-overload]
        if self._tokenizer_path:
            from tokenizers import Tokenizer

            try:
                self._tokenizer = Tokenizer.from_file(self._tokenizer_path)
            except Exception as exc:  # tokenizers raises a bare Exception
                raise BackendUnavailable(f"cannot load the tokenizer {self._tokenizer_path}: {exc}") from exc

    def _apply_deployed_limits(self) -> None:
        """Limits from the deployed container's environment, where no explicit setting overrides them."""
        try:
            source, deployed = deployed_limits(self._control, self._endpoint, self._component)
        except Exception as exc:  # a missing permission must not keep the service from serving
            log.warning("cannot read the SageMaker deployment's token limits, using the settings: %s", exc)
            source, deployed = "settings (deployment not readable)", (None, None)
        if deployed == (None, None) and not source.startswith("settings"):
            source = f"settings ({source} sets no limits)"
        override = self._limits_override
        max_input = override[0] or deployed[0] or self._info.max_input_tokens
        max_total = override[1] or deployed[1] or self._info.max_total_tokens
        if override != (None, None):
            source = f"{source}, overridden by settings"
        self.limits_from = source
        self._info = replace(self._info, max_input_tokens=max_input, max_total_tokens=max_total)
        limits = {"max_input_tokens": max_input, "max_total_tokens": max_total, "limits_from": source}
        log.info("SageMaker token limits", extra=limits)

    def info(self) -> ModelInfo:
        """The model and its limits: explicit settings, else the deployed container's, else the fallbacks."""
        return self._info

    @property
    def region(self) -> str:
        """The AWS region the clients call ("" before start)."""
        return (self._runtime.meta.region_name or "") if self._runtime is not None else ""

    async def check_health(self) -> bool:
        """True when the endpoint (and component) is in a state that serves; only "started" without checks."""
        if self._runtime is None:
            return False
        if not self._check_status:
            return True
        try:
            return (await self._statuses.get(self._control)).serving
        except ServiceError as exc:
            log.warning("SageMaker health check failed: %s", exc)
            return False

    async def count_tokens(self, input: GenerationInput) -> int:
        """Tokens by the configured tokenizer.json, else the 4-characters-per-token estimate.

        SageMaker exposes no tokenize route. Messages are counted as "role: content" lines (no chat
        template at hand), which misses the template's few special tokens.
        """
        text = (input.prompt or "") if input.messages is None else plain_chat_text(input.messages)
        if self._tokenizer is None:
            return estimate_tokens(text)
        encoding = await asyncio.to_thread(self._tokenizer.encode, text)
        return len(encoding.ids)

    def generate(self, request: Request) -> AsyncGenerator[Token | Completion, None]:
        """Stream from the endpoint, stop sequences cut from the output; closing this iterator closes the
        HTTP stream, stopping the model."""
        return cut_stop_sequences(self._stream(request), request, self.count_tokens)

    def _component_for(self, adapter: str) -> str | None:
        """The inference component to invoke: the adapter's, or the base one for no adapter."""
        if not adapter:
            return self._component
        try:
            return self._adapters[adapter]
        except KeyError:
            served = ", ".join(self._adapters) or "none"
            raise InvalidArgument({"adapter": f"unknown adapter {adapter!r} (served: {served})"}) from None

    async def _stream(self, request: Request) -> AsyncGenerator[Token | Completion, None]:
        """The container's own stream (a matched stop sequence still in it)."""
        if self._runtime is None:
            raise BackendUnavailable("the SageMaker backend is not started")
        component = self._component_for(request.adapter)
        invoke = invocation(self._payload, request)
        call: dict[str, Any] = {
            "EndpointName": self._endpoint,
            "Body": json.dumps(invoke.body),
            "ContentType": "application/json",
        }
        if component:
            call["InferenceComponentName"] = component
        if invoke.custom_attributes:
            call["CustomAttributes"] = invoke.custom_attributes
        pump = StreamPump(self._runtime, call, self._endpoint, name=f"sagemaker-stream-{request.request_id}")
        lines = SseLines()
        try:
            async for part in pump.parts():
                for data in lines.feed(part):
                    if data == "[DONE]":
                        continue
                    for item in invoke.decoder.feed(parse_event(data)):
                        yield item
            completion = invoke.decoder.end()
            if completion is not None:
                yield completion
        finally:
            pump.close()

    async def aclose(self) -> None:
        """Close the clients' connection pools."""
        for client in (self._runtime, self._control):
            if client is not None:
                await asyncio.to_thread(client.close)
        self._runtime = self._control = None
