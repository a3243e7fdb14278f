"""Rollout throughput and policy-swap cost, measured side by side in one run.

    python bench/rollout.py [--reps 3] [--hf] [--set generator.sampling.max_new_tokens=64 ...]

Same model, prompts and sampling for every contender (the embedded default unless --set says
otherwise: the train split, K answers each). Each contender runs in its own Ray actor with
one thread, one at a time, alternating, and the median of --reps runs is kept:

- raylign: `GeneratorGroup.generate` as the driver calls it (batches, up to
  generator.batches_in_flight of them at once, Arrow tables, Ray), timed from the driver; one
  engine with generator.lora_mode adapter (`raylign`, `raylign_lora`: the adapter as a LoRA
  request) and one with lora_mode merged (`merged_lora`: the adapter merged into its weights);
- vllm: a bare `LLM.generate` over all prompts at once, timed inside its actor, on an engine
  started with LoRA enabled (`vllm`, `vllm_lora`) and on one without (`vllm_nolora`: what a
  merged engine is, base weights);
- hf (with --hf): transformers `generate`, batch by batch, timed inside its actor.

The ratios: raylign's adapter mode ÷ bare vLLM with the adapter, merged mode ÷ bare vLLM
without LoRA (a merged policy costs what the base model costs), merged ÷ bare vLLM with the
adapter (what merging gains), and raylign ÷ bare vLLM on the base weights.

Then the time to make a new LoRA policy active in the running engine (through the object
store, up to its first answer: as an adapter, and merged) against starting a fresh engine
with it, and the same for a full-weight update. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import ray
import torch

from raylign.actors.generator import GeneratorGroup, vllm_env
from raylign.actors.vllm_engine import VLLMGenerator, dummy_adapter
from raylign.config import Config, SamplingConfig, load_config
from raylign.driver import lora_rank, resolve_model
from raylign.data.prompts import load_prompts, split
from raylign.data.schemas import BASE, PolicyVersion, user_turn
from raylign.training.weights import pack_folder, to_buckets


# Bench actors take a sliver of CPU: they run one at a time, next to raylign's engine.
@ray.remote(num_cpus=0.1)
class BareVLLM:
    """vLLM as a user starts it, with raylign's memory and eager settings (LoRA enabled or
    not), driven directly."""

    def __init__(self, model_path: str, cfg: Config, adapter: str | None):
        from vllm import LLM
        from vllm.lora.request import LoRARequest

        v = cfg.generator.vllm
        self.llm = LLM(model=model_path, dtype=cfg.model.dtype, seed=cfg.seed, enforce_eager=v.enforce_eager,
                       kv_cache_memory_bytes=v.kv_cache_memory_mb << 20, max_model_len=v.max_model_len,
                       enable_lora=adapter is not None, max_lora_rank=lora_rank(cfg), max_loras=v.max_loras)
        self.adapter = None if adapter is None else LoRARequest("bench", 1, adapter)

    def run(self, prompts: list[str], sampling: SamplingConfig, with_adapter: bool) -> tuple[int, float]:
        from vllm import SamplingParams, TokensPrompt

        tokenizer = self.llm.get_tokenizer()
        ids = [tokenizer.apply_chat_template(user_turn(p), add_generation_prompt=True, return_dict=False) for p in prompts]
        params = SamplingParams(n=sampling.samples_per_prompt, temperature=sampling.temperature,
                                top_p=sampling.top_p, max_tokens=sampling.max_new_tokens)
        t0 = time.perf_counter()
        out = self.llm.generate([TokensPrompt(prompt_token_ids=i) for i in ids], params, use_tqdm=False,
                                lora_request=self.adapter if with_adapter else None)
        seconds = time.perf_counter() - t0
        return sum(len(c.token_ids) for o in out for c in o.outputs), seconds


@ray.remote(num_cpus=0.1)
class BareHF:
    def __init__(self, model_path: str, cfg: Config, adapter: str | None):
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(1)  # as many threads as vLLM's CPU build binds here
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, padding_side="left")
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, cfg.model.dtype)).eval()
        if adapter is not None:
            self.model = PeftModel.from_pretrained(self.model, adapter).eval()
        self.batch_size = cfg.generator.batch_size

    @torch.no_grad()
    def run(self, prompts: list[str], sampling: SamplingConfig) -> tuple[int, float]:
        texts = [self.tokenizer.apply_chat_template(user_turn(p), add_generation_prompt=True, tokenize=False)
                 for p in prompts]
        eos, tokens = self.tokenizer.eos_token_id, 0
        t0 = time.perf_counter()
        for start in range(0, len(texts), self.batch_size):
            inputs = self.tokenizer(texts[start:start + self.batch_size], return_tensors="pt", padding=True,
                                    add_special_tokens=False)
            out = self.model.generate(**inputs, do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p,
                                      top_k=None, max_new_tokens=sampling.max_new_tokens,
                                      num_return_sequences=sampling.samples_per_prompt,
                                      pad_token_id=self.tokenizer.pad_token_id, eos_token_id=eos)
            for seq in out[:, inputs["input_ids"].shape[1]:]:
                ended = (seq == eos).nonzero()
                tokens += int(ended[0]) + 1 if len(ended) else len(seq)
        return tokens, time.perf_counter() - t0


def raylign_run(group: GeneratorGroup, prompts, policy: PolicyVersion, sampling: SamplingConfig) -> tuple[int, float]:
    t0 = time.perf_counter()
    tables = ray.get(list(group.generate(prompts, policy, sampling, 1, "train", seed=0).values()))
    seconds = time.perf_counter() - t0
    return sum(t["num_tokens"].to_numpy().sum() for t in tables), seconds


def median_throughput(runs: list[tuple[int, float]]) -> float:
    return statistics.median(tokens / seconds for tokens, seconds in runs)


def time_to_first_answer(engine, policy: PolicyVersion, probe, sampling: SamplingConfig) -> float:
    t0 = time.perf_counter()
    ray.get(engine.load_policy.remote(policy))
    ray.get(engine.generate.remote(probe, policy, sampling, 1, "eval", 0))
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--hf", action="store_true", help="transformers generate as well (slow)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    cfg = load_config(overrides=args.set)
    model_path = resolve_model(cfg, print)
    prompts = split(load_prompts(cfg.prompts), cfg.prompts.train_split, cfg.prompts.prompts_per_cycle, cfg.seed)
    sampling = cfg.generator.sampling
    adapter = dummy_adapter(model_path, cfg.learner.lora.r, tempfile.mkdtemp(prefix="bench-adapter-"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": vllm_env(cfg.generator.vllm, cfg.generator.num_threads)})
    print(f"model {model_path}\n{prompts.num_rows} prompts x {sampling.samples_per_prompt} samples, "
          f"max {sampling.max_new_tokens} tokens, batches of {cfg.generator.batch_size}, "
          f"{cfg.generator.batches_in_flight} in flight, {args.reps} reps (median)")

    groups = {mode: GeneratorGroup(model_path, cfg.model.dtype, cfg.generator.model_copy(update={"lora_mode": mode}),
                                   lora_rank(cfg), cfg.seed, 600)
              for mode in ("adapter", "merged")}
    lora = PolicyVersion(1, "lora", adapter, payload=(ray.put(pack_folder(adapter)),))
    bare_vllm, bare_nolora = BareVLLM.remote(model_path, cfg, adapter), BareVLLM.remote(model_path, cfg, None)
    bare = {"vllm": (bare_vllm, False), "vllm_lora": (bare_vllm, True), "vllm_nolora": (bare_nolora, False)}
    contenders = {
        "raylign": lambda rows: raylign_run(groups["adapter"], rows, BASE, sampling),
        "raylign_lora": lambda rows: raylign_run(groups["adapter"], rows, lora, sampling),
        "merged_lora": lambda rows: raylign_run(groups["merged"], rows, lora, sampling),
        **{name: bare_run(actor, with_adapter, sampling) for name, (actor, with_adapter) in bare.items()},
    }
    hf_actors = [BareHF.remote(model_path, cfg, None), BareHF.remote(model_path, cfg, adapter)] if args.hf else []
    for name, actor in zip(("hf", "hf_lora"), hf_actors):
        contenders[name] = lambda rows, actor=actor: ray.get(actor.run.remote(rows["prompt"].to_pylist(), sampling))
    for run in contenders.values():  # warm-up: first calls pay one-off costs (adapter loads, merges, allocations)
        run(prompts.slice(0, 16))
    runs: dict[str, list] = {name: [] for name in contenders}
    for _ in range(args.reps):
        for name, run in contenders.items():
            runs[name].append(run(prompts))
    tps = {name: median_throughput(r) for name, r in runs.items()}
    for name, value in tps.items():  # the tokens too: a contender whose answers ran longer did other work
        tokens = statistics.median(t for t, _ in runs[name])
        print(f"  {name:13s} {value:9.0f} tokens/s  {tokens:8.0f} tokens a run")
    ratios = {
        "adapter_over_vllm_lora": tps["raylign_lora"] / tps["vllm_lora"],
        "merged_over_vllm_nolora": tps["merged_lora"] / tps["vllm_nolora"],
        "merged_over_vllm_lora": tps["merged_lora"] / tps["vllm_lora"],
        "raylign_over_vllm": tps["raylign"] / tps["vllm"],
    }
    if args.hf:
        ratios |= {"vllm_over_hf": tps["vllm"] / tps["hf"],
                   "vllm_over_hf_lora_active": tps["vllm_lora"] / tps["hf_lora"]}
    print("  raylign, LoRA adapter ÷ bare vLLM, same adapter:   {adapter_over_vllm_lora:.3f}\n"
          "  raylign, LoRA merged ÷ bare vLLM without LoRA:     {merged_over_vllm_nolora:.3f}\n"
          "  raylign, LoRA merged ÷ bare vLLM, adapter active:  {merged_over_vllm_lora:.3f}\n"
          "  raylign ÷ bare vLLM, base weights:                 {raylign_over_vllm:.3f}".format(**ratios))

    for actor in (bare_vllm, bare_nolora, *hf_actors):
        ray.kill(actor)
    swaps = swap_costs(model_path, cfg, groups, adapter, prompts.slice(0, 1), args.reps)
    print(f"  new LoRA policy active in the running engine: {swaps['adapter'] * 1000:.0f} ms as an adapter, "
          f"{swaps['merged'] * 1000:.0f} ms merged; fresh engine with it: {swaps['restart']:.1f} s; full-weight "
          f"update ({swaps['parameters'] / 1e6:.1f}M parameters): {swaps['full'] * 1000:.0f} ms")

    result = {
        **{k: round(v, 3) for k, v in ratios.items()},
        "swap_over_restart": round(swaps["adapter"] / swaps["restart"], 4),
        "merged_swap_over_restart": round(swaps["merged"] / swaps["restart"], 4),
        "full_update_over_restart": round(swaps["full"] / swaps["restart"], 4),
        "tokens_per_s": {k: round(v) for k, v in tps.items()},
    }
    for group in groups.values():
        group.shutdown()
    ray.shutdown()
    print(json.dumps(result))


def bare_run(actor, with_adapter: bool, sampling: SamplingConfig):
    return lambda rows: ray.get(actor.run.remote(rows["prompt"].to_pylist(), sampling, with_adapter))


def swap_costs(model_path: str, cfg: Config, groups: dict, adapter: str, probe, reps: int) -> dict[str, float]:
    """Medians, in seconds, of making a new policy active up to its first answer: a LoRA
    adapter in the adapter-mode engine and merged in the merged-mode one, a fresh engine with
    the adapter, and a full-weight update; and the model's parameter count."""
    from transformers import AutoModelForCausalLM

    one_token = SamplingConfig(samples_per_prompt=1, temperature=0.0, max_new_tokens=1)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    times: dict[str, list[float]] = {"adapter": [], "merged": [], "restart": [], "full": []}
    for i in range(reps):
        for mode in ("adapter", "merged"):
            fresh = PolicyVersion(10 + i, "lora", adapter, payload=(ray.put(pack_folder(adapter)),))
            times[mode].append(time_to_first_answer(groups[mode].engines[0], fresh, probe, one_token))
        t0 = time.perf_counter()
        restarted = ray.remote(VLLMGenerator).options(
            num_cpus=cfg.generator.num_cpus,
            runtime_env={"env_vars": vllm_env(cfg.generator.vllm, cfg.generator.num_threads)},
        ).remote(model_path, cfg.model.dtype, cfg.generator, lora_rank(cfg), cfg.seed)
        ray.get(restarted.ready.remote())
        times["restart"].append(time.perf_counter() - t0 + time_to_first_answer(restarted, fresh, probe, one_token))
        ray.kill(restarted)
        buckets = tuple(ray.put(b) for b in to_buckets(model.state_dict().items(), 64 << 20))
        full = PolicyVersion(100 + i, "full", None, buckets)
        times["full"].append(time_to_first_answer(groups["adapter"].engines[0], full, probe, one_token))
    medians = {k: statistics.median(v) for k, v in times.items()}
    return medians | {"parameters": sum(p.numel() for p in model.parameters())}


if __name__ == "__main__":
    main()
