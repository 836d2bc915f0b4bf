"""A small, untrained LoRA adapter GGUF for a base GGUF model, written offline with the `gguf` package.

llama.cpp loads an adapter when its metadata says `general.type=adapter`, `adapter.type=lora`, the base
model's `general.architecture`, and `adapter.lora.alpha`; each adapted weight `W` (ggml shape
[n_in, n_out]) gets `W.lora_a` (ggml [n_in, r]) and `W.lora_b` (ggml [r, n_out]), F32 here. numpy shapes
are ggml's reversed: lora_a is (r, n_in), lora_b (n_out, r). The adapter is random: it changes the output,
which is all the tests need of it.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from llm_service.backends.embedded import packaged_model_path

TARGETS = ("attn_q", "attn_v", "attn_output", "ffn_down")


def write_lora(
    base: Path,
    out: Path,
    *,
    layers: tuple[int, ...] = (0, 1, 2, 3),
    rank: int = 8,
    alpha: float = 16.0,
    std: float = 0.1,
    seed: int = 0,
) -> Path:
    """Writes a rank-`rank` LoRA adapter for `layers` of the base model at `base` to `out`; returns `out`."""
    reader = gguf.GGUFReader(base)
    arch_field = reader.fields["general.architecture"]
    arch = bytes(arch_field.parts[arch_field.data[0]]).decode()
    shapes = {t.name: tuple(int(n) for n in t.shape) for t in reader.tensors}  # ggml order: (n_in, n_out)
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(out, arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    for layer in layers:
        for target in TARGETS:
            name = f"blk.{layer}.{target}.weight"
            n_in, n_out = shapes[name]
            writer.add_tensor(f"{name}.lora_a", rng.normal(0, std, (rank, n_in)).astype(np.float32))
            writer.add_tensor(f"{name}.lora_b", rng.normal(0, std, (n_out, rank)).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


@pytest.fixture
def lora_adapter(tmp_path: Path) -> Path:
    """A LoRA adapter GGUF for the packaged SmolLM2-135M model, in tmp_path."""
    return write_lora(packaged_model_path(), tmp_path / "twin-lora.gguf")
