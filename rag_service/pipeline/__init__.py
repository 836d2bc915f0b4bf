"""Advanced RAG steps: pre-retrieval (expand, self_query), retrieval (search), post-retrieval (rerank), prompt."""
