"""How a policy travels from the learner to the generators: as bytes, through the object store.

A LoRA adapter is a small folder: it travels whole, as {file name: bytes}, and is written
back out on the engine's node. Full weights travel as buckets: safetensors blobs of about
`bucket_bytes` each, so an engine loads them a bucket at a time (one call per bucket, not one
per parameter) and neither side holds a second full copy. Bytes pass unchanged through Ray's
object store and through vLLM's RPC to its workers, so no shared filesystem is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import torch
from safetensors.torch import load as load_safetensors
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
