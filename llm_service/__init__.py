"""LLM service: one streaming gRPC contract over an embedded CPU model, a TGI server or a SageMaker endpoint."""
