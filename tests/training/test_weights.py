"""Policies as bytes: adapter folders whole, full weights in safetensors buckets."""

import pytest
import torch

from raylign.training.weights import (from_bucket, lora_deltas, pack_folder, to_buckets, unpack_folder,
                                     with_deltas)


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


def test_lora_deltas_merge_as_peft_does(tmp_path):
    """W + scale * B @ A for every adapted weight, scale from the adapter's alpha, rank and
    alpha_pattern, equal to PEFT's own merge; a weight the model lacks is refused."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    weights = {k: v.clone() for k, v in base.state_dict().items()}
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["0", "2"], alpha_pattern={"2": 2}, init_lora_weights=False)
    peft = get_peft_model(base, config)
    peft.save_pretrained(tmp_path)
    expected = peft.merge_and_unload().state_dict()

    deltas = lora_deltas(tmp_path)
    assert sorted(deltas) == ["0.weight", "2.weight"]
    merged = dict(with_deltas(weights.items(), deltas))
    assert sorted(merged) == sorted(expected)
    for name, tensor in expected.items():
        torch.testing.assert_close(merged[name], tensor, rtol=0, atol=1e-6)
    assert torch.equal(merged["0.bias"], weights["0.bias"])  # not adapted: passed through as it was
    with pytest.raises(ValueError, match="weights the model does not have"):
        list(with_deltas([("0.weight", weights["0.weight"])], deltas))
