"""How a policy travels from the learner to the generators: as bytes, through the object store.

A LoRA adapter is a small folder: it travels whole, as {file name: bytes}, and is written
back out on the engine's node; an engine that serves it merged (generator.lora_mode) adds
`lora_deltas` to the base weights as it loads them. Full weights travel as buckets:
safetensors blobs of about `bucket_bytes` each, so an engine loads them a bucket at a time (one
call per bucket, not one per parameter) and neither side holds a second full copy. Bytes pass unchanged through Ray's
object store and through vLLM's RPC to its workers, so no shared filesystem is needed.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Iterable, Iterator

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors


def pack_folder(folder: str | Path) -> dict[str, bytes]:
    """Every file directly in `folder` (adapter folders are flat), by name."""
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}


def unpack_folder(files: dict[str, bytes], dest: str | Path) -> Path:
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if Path(name).name != name:
            raise ValueError(f"adapter file name {name!r} is not a plain file name")
        (dest / name).write_bytes(data)
    return dest


def to_buckets(named_tensors: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int) -> Iterator[bytes]:
    """Group tensors, in order, into safetensors blobs of at most `bucket_bytes` (a tensor
    larger than that gets a bucket of its own)."""
    bucket: dict[str, torch.Tensor] = {}
    size = 0
    for name, tensor in named_tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if bucket and size + nbytes > bucket_bytes:
            yield save_safetensors(bucket)
            bucket, size = {}, 0
        # safetensors wants contiguous CPU tensors that share no storage with each other.
        bucket[name] = tensor.detach().to("cpu").contiguous().clone()
        size += nbytes
    if bucket:
        yield save_safetensors(bucket)


def from_bucket(blob: bytes) -> dict[str, torch.Tensor]:
    return load_safetensors(blob)


def lora_deltas(folder: str | Path) -> dict[str, torch.Tensor]:
    """{base weight name: scale * B @ A} of a PEFT LoRA adapter folder, in float32: what merging
    it adds to the base model's weights, named as the base checkpoint names them."""
    config = json.loads((Path(folder) / "adapter_config.json").read_text())
    if config.get("use_dora") or config.get("fan_in_fan_out") or config.get("modules_to_save"):
        raise ValueError(f"LoRA adapter {folder}: DoRA, fan_in_fan_out and modules_to_save cannot be merged here; "
                         "set generator.lora_mode adapter")
    tensors = load_file(Path(folder) / "adapter_model.safetensors")
    if unknown := [k for k in tensors if not k.endswith((".lora_A.weight", ".lora_B.weight"))]:
        raise ValueError(f"LoRA adapter {folder} has weights other than linear layers' lora_A/lora_B "
                         f"({unknown[0]}, ...): set generator.lora_mode adapter")
    deltas = {}
    for key, a in tensors.items():
        if not key.endswith(".lora_A.weight"):
            continue
        module = key.removesuffix(".lora_A.weight")
        b = tensors[f"{module}.lora_B.weight"]
        module = module.removeprefix("base_model.model.")
        rank, alpha = a.shape[0], _alpha(config, module)
        scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
        deltas[f"{module}.weight"] = scale * (b.float() @ a.float())
    return deltas


def _alpha(config: dict, module: str) -> float:
    """The module's lora_alpha: PEFT's alpha_pattern (key matched as a suffix of the module's
    name, or as a regex) before the adapter's own."""
    for pattern, alpha in (config.get("alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?{pattern}$", module):
            return alpha
    return config["lora_alpha"]


def with_deltas(weights: Iterable[tuple[str, torch.Tensor]], deltas: dict[str, torch.Tensor]
                ) -> Iterator[tuple[str, torch.Tensor]]:
    """`weights` with `deltas` added (in float32, then back to each weight's dtype); raises at
    the end if a delta named a weight that never came."""
    left = dict(deltas)
    for name, tensor in weights:
        delta = left.pop(name, None)
        yield name, tensor if delta is None else (tensor.float() + delta.to(tensor.device)).to(tensor.dtype)
    if left:
        raise ValueError(f"LoRA adapter changes weights the model does not have: {sorted(left)[:3]}")
