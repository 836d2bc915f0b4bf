# gateway: HTTP/SSE and OpenAI-compatible front door; no torch, no model, ~100 MB.
#   docker build -f deploy/gateway.Dockerfile -t llmtwin/gateway .
#   docker run -p 8000:8000 -e GATEWAY_RAG_TARGET=rag:50051 llmtwin/gateway

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install "protobuf>=6.31,<7" "grpcio==1.85.*" "grpcio-status==1.85.*" \
        "grpcio-health-checking>=1.80,<1.86" "grpcio-reflection>=1.80,<1.86" "googleapis-common-protos>=1.63" \
        "pydantic>=2.7" "pydantic-settings==2.16.*" "prometheus-client>=0.20" \
        "fastapi>=0.160,<0.170" "uvicorn>=0.30" "sse-starlette>=2.1"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gen ./gen
COPY llm_service ./llm_service
COPY servekit ./servekit
COPY rag_service ./rag_service
COPY gateway ./gateway
RUN pip install --no-deps .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:$PATH GATEWAY_HOST=0.0.0.0
COPY --from=build /opt/venv /opt/venv
COPY deploy/healthcheck.py /app/healthcheck.py
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin twin
USER 10001
WORKDIR /app
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "/app/healthcheck.py", "http", "http://127.0.0.1:8000/healthz"]
STOPSIGNAL SIGTERM
CMD ["python", "-m", "gateway"]
