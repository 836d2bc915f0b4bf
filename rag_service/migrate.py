"""`python -m rag_service.migrate`: give the collections made before hybrid search their BM25 vectors.

Each collection without BM25 vectors is rebuilt in place from its own points (dense vectors and payloads kept,
BM25 computed from the stored text; nothing is embedded again, nothing is lost); collections that have them are
left alone, so running it twice is harmless. The store comes from the RAG service's own variables
(RAG_STORE_BACKEND, RAG_QDRANT_PATH, RAG_QDRANT_URL, RAG_QDRANT_API_KEY, RAG_COLLECTION_PREFIX). An embedded store
can be open in one process only: stop the RAG service first. On a Qdrant server, searches of a collection being
rebuilt fail for the copy's duration; restart the replicas afterwards, so that they see the new vectors.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from rag_service.ingest import IngestSettings, StoreOptions
from rag_service.types import Kind


async def migrate(options: StoreOptions) -> tuple[list[Kind], int]:
    """Rebuilds the collections without BM25 vectors; the kinds rebuilt and the chunks the store holds."""
    store = options.open()
    try:
        rebuilt = await store.add_sparse_vectors()
        return rebuilt, await store.count()
    finally:
        await store.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; exit status 0 when every collection has BM25 vectors, 1 on failure."""
    from servekit.startup import StartupError, load_settings

    argparse.ArgumentParser(prog="python -m rag_service.migrate", description=__doc__).parse_args(argv)
    try:
        options = load_settings(IngestSettings, "RAG_").store_options()
    except StartupError as error:
        print(f"migration failed: {error}", file=sys.stderr)
        return 1
    where = options.url if options.backend == "client" and options.url else options.path
    try:
        rebuilt, chunks = asyncio.run(migrate(options))
    except Exception as error:
        print(f"migration of the {options.backend} store at {where} failed: {error}", file=sys.stderr)
        return 1
    names = ", ".join(k.value for k in rebuilt) or "none (every collection already had them)"
    print(f"{options.backend} store at {where}: BM25 vectors added to {names}; {chunks} chunks in the store")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
