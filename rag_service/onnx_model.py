"""all-MiniLM-L6-v2 on ONNX Runtime: exported once from the packaged weights, cached, then run without torch.

Measured on 2 shared cores, one thread (docs/evaluation.md): the same vectors as sentence-transformers on torch
(cosine 1.0000) at about 2.3x the queries per second, one at a time and in batches. The export runs the
packaged model through `torch.onnx.export` (BERT only; mean pooling and normalisation stay here, as the
sentence-transformers pipeline does them), takes about a second, and is cached under a name derived from the
weights, so a new model version exports anew and concurrent starts never read a half-written file.
`python -m rag_service.onnx_model [CACHE_DIR]` exports ahead of time (image builds).
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/llmtwin, else ~/.cache/llmtwin."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "llmtwin"


def exported_path(model_dir: Path, cache_dir: Path) -> Path:
    """Where the export of the model in `model_dir` is cached: named by its config and weights."""
    digest = hashlib.sha256((model_dir / "config.json").read_bytes())
    weights = model_dir / "model.safetensors"
    digest.update(f"{weights.stat().st_size}".encode())
    return cache_dir / f"all-MiniLM-L6-v2-{digest.hexdigest()[:16]}.onnx"


def ensure_exported(model_dir: Path, cache_dir: Path, *, int8: bool = False) -> Path:
    """The cached ONNX file of the model, exported first if it is not there yet; with `int8`, its dynamic
    int8 quantization (weights in int8, activations quantized per batch), made from the fp32 export."""
    path = exported_path(model_dir, cache_dir)
    if not path.exists():
        export(model_dir, path)
    if not int8:
        return path
    quantized = path.with_suffix(".int8.onnx")
    if not quantized.exists():
        _atomically(quantized, lambda tmp: quantize(path, tmp))
    return quantized


def quantize(source: Path, target: str) -> None:
    """Dynamic int8 quantization of an fp32 export (onnxruntime.quantization)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), target, weight_type=QuantType.QInt8)


def _atomically(path: Path, write: Callable[[str], None]) -> None:
    """`write(tmp)` then renames tmp to `path`: a concurrent start never reads a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".onnx.tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def export(model_dir: Path, path: Path) -> None:
    """Exports the model's BERT to `path` (opset 17, dynamic batch and length), atomically."""
    import torch
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(str(model_dir)).eval()

    class Hidden(torch.nn.Module):
        # Keyword inputs, last hidden state out: what the pooling below needs.
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor):  # type: ignore[no-untyped-def]
            out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return out.last_hidden_state

    sample = torch.ones(1, 8, dtype=torch.long)
    axes = {name: {0: "batch", 1: "tokens"} for name in (*INPUTS, "hidden")}

    def write(tmp: str) -> None:
        # The tracer warns about shape-dependent Python branches in transformers' masking: expected here (the
        # branches do not depend on the batch or length), and fatal where warnings are errors (pytest).
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Hidden(),
                (sample, sample, torch.zeros_like(sample)),
                tmp,
                input_names=list(INPUTS),
                output_names=["hidden"],
                dynamic_axes=axes,
                opset_version=17,
                dynamo=False,  # the TorchScript exporter: one self-contained file, no onnxscript
            )

    _atomically(path, write)


class OnnxEncoder:
    """Unit-length sentence vectors from an exported model: tokenize, run, mean-pool over real tokens."""

    def __init__(self, path: Path, tokenizer: Tokenizer, *, threads: int = 1, max_tokens: int = 256):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._tokenizer = Tokenizer.from_str(tokenizer.to_str())
        self._tokenizer.enable_truncation(max_tokens)  # as sentence-transformers' max_seq_length

    def encode(self, texts: list[str], batch_size: int = 32) -> npt.NDArray[np.float32]:
        """Vectors in the order of `texts`; batches of similar length, as sentence-transformers forms them."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), 0), np.float32)
        for start in range(0, len(texts), batch_size):
            chunk = order[start : start + batch_size]
            vectors = self._run([texts[i] for i in chunk])
            if not out.shape[1]:
                out = np.empty((len(texts), vectors.shape[1]), np.float32)
            out[chunk] = vectors
        return out

    def _run(self, texts: list[str]) -> npt.NDArray[np.float32]:
        encodings = self._tokenizer.encode_batch(texts)
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), np.int64)
        mask = np.zeros_like(ids)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1
        (hidden,) = self._session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": 0 * ids})
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return (pooled / norms).astype(np.float32)


if __name__ == "__main__":
    from rag_service.embedding import model_path

    cache = Path(sys.argv[1]) if len(sys.argv) > 1 else default_cache_dir()
    print(ensure_exported(model_path(), cache))
