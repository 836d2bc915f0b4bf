"""RAG service: advanced retrieval over Qdrant, prompt augmentation, answers streamed from the LLM service."""
