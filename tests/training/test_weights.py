"""Policies as bytes: adapter folders whole, full weights in safetensors buckets."""

import pytest
import torch

from raylign.training.weights import from_bucket, pack_folder, to_buckets, unpack_folder


def named(sizes: list[int]) -> list[tuple[str, torch.Tensor]]:
    return [(f"layer{i}.weight", torch.full((n,), float(i))) for i, n in enumerate(sizes)]


def test_buckets_hold_at_most_the_limit_and_keep_every_tensor_in_turn():
    tensors = named([100, 100, 100, 50, 300, 10])  # float32: 400, 400, 400, 200, 1200, 40 bytes
    blobs = list(to_buckets(tensors, bucket_bytes=800))
    buckets = [from_bucket(b) for b in blobs]
    assert [sorted(b) for b in buckets] == [
        ["layer0.weight", "layer1.weight"],
        ["layer2.weight", "layer3.weight"],
        ["layer4.weight"],  # larger than a bucket: one of its own
        ["layer5.weight"],
    ]
    merged = {k: v for b in buckets for k, v in b.items()}
    for name, tensor in tensors:
        assert torch.equal(merged[name], tensor)


def test_tied_and_non_contiguous_tensors_round_trip():
    embed = torch.randn(8, 4)
    tensors = [("embed.weight", embed), ("lm_head.weight", embed), ("t.weight", torch.randn(4, 8).t())]
    (blob,) = to_buckets(tensors, bucket_bytes=1 << 20)
    out = from_bucket(blob)
    assert torch.equal(out["lm_head.weight"], embed)
    assert torch.equal(out["t.weight"], tensors[2][1])


def test_adapter_folder_round_trips_as_bytes(tmp_path):
    src = tmp_path / "adapter"
    src.mkdir()
    (src / "adapter_config.json").write_text('{"r": 16}')
    (src / "adapter_model.safetensors").write_bytes(bytes(range(256)))
    files = pack_folder(src)
    assert sorted(files) == ["adapter_config.json", "adapter_model.safetensors"]
    dest = unpack_folder(files, tmp_path / "elsewhere")
    assert pack_folder(dest) == files


def test_unpack_refuses_paths_that_leave_the_folder(tmp_path):
    with pytest.raises(ValueError, match="not a plain file name"):
        unpack_folder({"../escape": b"x"}, tmp_path / "dest")
