#!/usr/bin/env bash
# Regenerates the Python code and the descriptor set (protoset) from protos/. Reproducible: the output
# depends only on the .proto files and the pinned grpcio-tools.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
out=gen/python
rm -rf "$out" gen/llmtwin.protoset
mkdir -p "$out"
mapfile -t files < <(find protos -name '*.proto' | sort)
"$PY" -m grpc_tools.protoc -I protos \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  --descriptor_set_out=gen/llmtwin.protoset --include_imports --include_source_info \
  "${files[@]}"
# Regular packages (not namespace ones), so setuptools and mypy find them without special flags.
find "$out" -mindepth 1 -type d -exec touch {}/__init__.py \;
