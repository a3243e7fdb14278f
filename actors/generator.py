"""RolloutGenerator: samples K answers per prompt from the current policy.

Supports the `hf` backend (transformers `generate`) with LoRA policies loaded into the running
model by PEFT, one adapter per policy version, no restart. `GeneratorGroup` spreads batches of
prompts across engines and returns one ObjectRef per batch, so judging can start on the first
finished batch.
"""

from __future__ import annotations

import contextlib
import itertools

import pyarrow as pa
import ray
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from raylign.config import GeneratorConfig, SamplingConfig
from raylign.schemas import ROLLOUTS, PolicyVersion, user_turn
from raylign.sequences import device_for


class RolloutGenerator:
    """One engine. Plain class; `GeneratorGroup` runs it as a Ray actor."""

    def __init__(self, model_path: str, dtype: str, cfg: GeneratorConfig):
        torch.set_num_threads(cfg.num_threads)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.tokenizer.padding_side = "left"
        self.device = device_for(cfg.num_gpus)
        self.base = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype)).to(self.device).eval()
        self.peft: PeftModel | None = None  # wraps `base` once the first adapter arrives
        self.policy = PolicyVersion(0, None)

    def load_policy(self, policy: PolicyVersion) -> int:
        """Make `policy` the one that answers, without reloading the base; returns its version."""
        if policy == self.policy:
            return policy.version
        if policy.adapter_path is not None:
            name = f"v{policy.version}"
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(self.base, policy.adapter_path, adapter_name=name).eval()
            else:
                previous = self.peft.active_adapter
                self.peft.load_adapter(policy.adapter_path, adapter_name=name)
                self.peft.set_adapter(name)
                if previous != name:
                    self.peft.delete_adapter(previous)
        self.policy = policy
        return policy.version

    def _model(self):
        """The model and a context that answers with the current policy."""
        if self.peft is None:
            return self.base, contextlib.nullcontext()
        if self.policy.adapter_path is None:
            return self.peft, self.peft.disable_adapter()
        return self.peft, contextlib.nullcontext()

    @torch.no_grad()
    def generate(self, prompts: pa.Table, policy: PolicyVersion, sampling: SamplingConfig, cycle: int,
                 stage: str, seed: int) -> pa.Table:
        """K sampled answers of `policy` for each prompt row, as a ROLLOUTS table."""
        self.load_policy(policy)  # also heals an engine restarted since the last call
        model, policy_context = self._model()
        rows = prompts.to_pylist()
        texts = [
            self.tokenizer.apply_chat_template(user_turn(r["prompt"]), add_generation_prompt=True, tokenize=False)
            for r in rows
        ]
        inputs = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        k = sampling.samples_per_prompt
        greedy = sampling.temperature == 0
        torch.manual_seed(seed)
        with policy_context:
            out = model.generate(
                **inputs,
                do_sample=not greedy,
                temperature=None if greedy else sampling.temperature,
                top_p=None if greedy else sampling.top_p,
                top_k=None,
                max_new_tokens=sampling.max_new_tokens,
                num_return_sequences=k,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
            )
        completions = out[:, inputs["input_ids"].shape[1] :]
        records = []
        for seq, (row, sample_index) in zip(completions, itertools.product(rows, range(k))):
            ended = (seq == self.tokenizer.eos_token_id).nonzero()
            length = int(ended[0]) + 1 if len(ended) else len(seq)
            records.append(
                {
                    "cycle": cycle,
                    "stage": stage,
                    "prompt_id": row["id"],
                    "sample_index": sample_index,
                    "prompt": row["prompt"],
                    "harmful_level": row["harmful_level"],
                    "principle_index": row["principle_index"],
                    "method": row["method"],
                    "answer": self.tokenizer.decode(seq[:length], skip_special_tokens=True).strip(),
                    "num_tokens": length,
                    "finish_reason": "stop" if len(ended) else "length",
                    "policy_version": self.policy.version,
                }
            )
        return pa.Table.from_pylist(records, schema=ROLLOUTS)


class GeneratorGroup:
    """`cfg.engines` generators; batches go round-robin, each returns its own ObjectRef."""

    def __init__(self, model_path: str, dtype: str, cfg: GeneratorConfig):
        self.cfg = cfg
        actor = ray.remote(RolloutGenerator).options(
            num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus, resources=cfg.resources,
            max_restarts=2, max_task_retries=2,
        )
        self.engines = [actor.remote(model_path, dtype, cfg) for _ in range(cfg.engines)]

    def generate(self, prompts: pa.Table, policy: PolicyVersion, sampling: SamplingConfig, cycle: int,
                 stage: str, seed: int) -> list[ray.ObjectRef]:
        refs = []
        for i, start in enumerate(range(0, prompts.num_rows, self.cfg.batch_size)):
            batch = prompts.slice(start, self.cfg.batch_size)
            engine = self.engines[i % len(self.engines)]
            refs.append(engine.generate.remote(batch, policy, sampling, cycle, stage, seed * 7919 + cycle * 104_729 + i))
        return refs
