"""`python -m rag_service.ingest` against a RAG service that serves TLS and wants a bearer token: the CLI dials
it with the services' own channel setup (servekit client_channel, ClientTls, the token on every call)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from rag_service.embedding import Embedder
from tests.support.certs import Pki, make_pki
from tests.support.procs import ROOT
from tests.support.rag import CORPUS, RunningRag, running_rag

pytestmark = pytest.mark.asyncio(loop_scope="session")

TOKEN = "ingest-cli-token"
LINES = CORPUS.read_text().splitlines()[:2]


@dataclass
class Secured:
    """A TLS + token RAG service, its CA, and a JSON Lines file of two documents."""

    rag: RunningRag
    pki: Pki
    jsonl: Path
    store: Path  # where the CLI would write if it fell back to the direct mode


@pytest_asyncio.fixture(loop_scope="session")
async def secured(embedder: Embedder, tmp_path: Path) -> AsyncIterator[Secured]:
    pki = make_pki(tmp_path)
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("\n".join(LINES) + "\n")
    overrides = {"tls_cert_file": pki.server.cert, "tls_key_file": pki.server.key, "auth_tokens": TOKEN}
    async with running_rag("127.0.0.1:1", embedder, **overrides) as rag:  # type: ignore[arg-type]
        yield Secured(rag, pki, jsonl, tmp_path / "direct-store")


async def run_cli(s: Secured, *args: str, **env: str) -> tuple[int, str, str]:
    """Runs the CLI as a process (the service keeps serving on this loop meanwhile): status, stdout, stderr."""
    full_env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "RAG_STORE_BACKEND": "edge",
        "RAG_QDRANT_PATH": str(s.store),
        **env,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rag_service.ingest",
        str(s.jsonl),
        "--target",
        f"localhost:{s.rag.port}",
        "--connect-timeout",
        "10",
        *args,
        cwd=ROOT,
        env=full_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_cli_ingests_into_a_tls_and_token_service_with_settings_from_the_environment(
    secured: Secured,
) -> None:
    status, out, err = await run_cli(secured, RAG_INGEST_TLS_CA_FILE=secured.pki.ca, RAG_INGEST_AUTH_TOKEN=TOKEN)
    assert status == 0, err
    match = re.fullmatch(
        rf"2 documents, (\d+) chunks written via the RAG service at localhost:{secured.rag.port}\n", out
    )
    assert match is not None, out
    assert int(match[1]) >= 2  # at least one chunk a document
    assert not secured.store.exists(), "nothing was written to the store directly"


async def test_the_cli_takes_its_ca_from_the_command_line_and_is_refused_without_the_token(secured: Secured) -> None:
    status, _, err = await run_cli(secured, "--ca-file", secured.pki.ca)
    assert status == 1
    assert err.strip().splitlines()[-1].startswith("ingestion failed: UNAUTHENTICATED: ")
    assert not secured.store.exists()
