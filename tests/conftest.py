"""Shared test configuration: offline models, quiet third-party SDKs, one thread per library."""

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OPIK_SENTRY_ENABLE", "false")
os.environ.setdefault("OPIK_ANALYTICS_ENABLE", "false")
os.environ.setdefault("OPIK_TRACK_DISABLE", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A fresh directory, on tmpfs where there is one: the engine fsyncs on create, index and close."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="rag-test-", dir=shm))
    yield path
    shutil.rmtree(path, ignore_errors=True)
