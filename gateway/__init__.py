"""HTTP gateway: JSON, server-sent events and an OpenAI-compatible API in front of the RAG gRPC service."""
