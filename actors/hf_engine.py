"""HFGenerator: transformers `generate`, for `generator.backend: hf` only.

For environments where vLLM cannot be installed; never a silent fallback. Same contract as
VLLMGenerator: LoRA policies are loaded into the running model by PEFT, one adapter per
policy version, and applied on the fly whatever `generator.lora_mode` says (its `ready()`
reports `adapter`); full weights are loaded bucket by bucket into the model's parameters. One
batch at a time.
"""

from __future__ import annotations

import contextlib
import os

import ray
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from raylign.actors.generator import NOT_GENERATED, AdapterCache, Completion, EngineInfo, RolloutEngine
from raylign.config import GeneratorConfig, SamplingConfig
from raylign.data.schemas import BASE, PolicyVersion, user_turn
from raylign.training.sequences import device_for
from raylign.training.weights import from_bucket


class HFGenerator(RolloutEngine):
    """One engine. Plain class; `GeneratorGroup` runs it as a Ray actor."""

    def __init__(self, model_path: str, dtype: str, cfg: GeneratorConfig, lora_rank: int | None, seed: int):
        super().__init__()
        torch.set_num_threads(cfg.num_threads)
        self.model_path, self.dtype = model_path, getattr(torch, dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.tokenizer.padding_side = "left"
        self.device = device_for(cfg.num_gpus)
        self.base = self._load_base()
        self.max_model_len = self.base.config.max_position_embeddings
        self.peft: PeftModel | None = None  # wraps `base` once the first adapter arrives
        self.adapters = AdapterCache(keep=cfg.vllm.max_loras)
        self.weights_key = BASE.key
        self.policy = BASE
        # PEFT applies an adapter on the fly, whatever generator.lora_mode asks: merging would
        # gain little in transformers, and unmerging rounds the base weights.
        self.lora_mode = None if lora_rank is None else "adapter"

    def _load_base(self):
        return AutoModelForCausalLM.from_pretrained(self.model_path, dtype=self.dtype).to(self.device).eval()

    def ready(self) -> EngineInfo:
        return EngineInfo(os.getpid(), id(self.base), "hf", self.max_model_len, self.lora_mode)

    def shutdown(self) -> None:
        """Nothing to stop: the model goes with the actor."""

    def load_policy(self, policy: PolicyVersion) -> int:
        if policy == self.policy:
            return policy.version
        if policy.kind == "full" and policy.key != self.weights_key:
            self._load_full_weights(policy)
        elif policy.kind != "full" and self.weights_key != BASE.key:
            self.base.load_state_dict(self._load_base().state_dict())
            self.weights_key = BASE.key
        if policy.kind == "lora":
            folder, _ = self.adapters.folder(policy)
            name = f"v{policy.version}"
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(self.base, folder, adapter_name=name).eval()
            else:
                previous = self.peft.active_adapter
                self.peft.load_adapter(folder, adapter_name=name)
                self.peft.set_adapter(name)
                if previous != name:
                    self.peft.delete_adapter(previous)
        self.policy = policy
        return policy.version

    def _load_full_weights(self, policy: PolicyVersion) -> None:
        if not policy.payload:
            raise ValueError(f"full-weight policy version {policy.version} has no payload")
        params = dict(self.base.named_parameters())
        with torch.no_grad():
            for ref in policy.payload:
                for name, tensor in from_bucket(ray.get(ref)).items():
                    params[name].copy_(tensor)
        self.weights_key = policy.key

    def _model(self):
        """The model and a context that answers with the current policy."""
        if self.peft is None:
            return self.base, contextlib.nullcontext()
        if self.policy.kind != "lora":
            return self.peft, self.peft.disable_adapter()
        return self.peft, contextlib.nullcontext()

    @torch.no_grad()
    def answer(self, messages: list[str | list[dict]], policy: PolicyVersion, sampling: SamplingConfig,
               seed: int) -> list[list[Completion]]:
        """K answers of `policy` to each user message or chat: rollouts, and the judges' rubric prompts."""
        self.load_policy(policy)
        model, policy_context = self._model()
        texts = [self.tokenizer.apply_chat_template(m if isinstance(m, list) else user_turn(m), add_generation_prompt=True, tokenize=False)
                 for m in messages]
        lengths = [len(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        fits = [n + sampling.max_new_tokens <= self.max_model_len for n in lengths]
        k = sampling.samples_per_prompt
        generated = iter(self._sample(model, policy_context, [t for t, ok in zip(texts, fits) if ok], sampling, seed))
        return [[next(generated) for _ in range(k)] if ok else [NOT_GENERATED] * k for ok in fits]

    def _sample(self, model, policy_context, texts: list[str], sampling: SamplingConfig, seed: int) -> list[Completion]:
        if not texts:
            return []
        inputs = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
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
                num_return_sequences=sampling.samples_per_prompt,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
            )
        completions = []
        for seq in out[:, inputs["input_ids"].shape[1]:]:
            ended = (seq == self.tokenizer.eos_token_id).nonzero()
            length = int(ended[0]) + 1 if len(ended) else len(seq)
            text = self.tokenizer.decode(seq[:length], skip_special_tokens=True)
            completions.append(Completion(text, length, "stop" if len(ended) else "length"))
        return completions
