"""The checkout's root, and the import paths and environment defaults every suite needs.

Imported before anything of the project: it puts the checkout and the generated code on `sys.path`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "gen" / "python")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def logs_dir() -> Path:
    """var/bench/, where the service processes a suite starts write their logs (created)."""
    logs = ROOT / "var" / "bench"
    logs.mkdir(parents=True, exist_ok=True)
    return logs
