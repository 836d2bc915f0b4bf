"""Pieces every benchmark suite shares: paths and environment, data files, service processes, statistics.

Importing any of it first puts the checkout and the generated code on `sys.path` (see `common.paths`), so
that a suite's imports of the project (`rag_service`, `llmtwin`, `tests.support`) resolve when it is run as
`python bench/<suite>.py`.
"""

from common.paths import ROOT

__all__ = ["ROOT"]
