"""Learner: a DeepSpeed ZeRO group of Ray actors that trains the policy each cycle.

`LearnerGroup` places `world_size` ranks with a placement group (one bundle each); rank 0
publishes its address and a free port, every rank joins one torch.distributed group (gloo on
CPU, NCCL on GPU) with a timeout, and DeepSpeed (ZeRO stage by config; one rank at most stage 2)
wraps the model with a torch optimizer. The model stays loaded across cycles.

Per cycle: DPO (sigmoid, ipo, hinge, robust) plus an optional SFT term on the chosen answer,
or KTO with class weights and a KL baseline from mismatched pairs; the reference policy is the
initial model (LoRA adapter disabled: no second copy of the weights) or the previous cycle's
policy, its log-probabilities computed once per cycle, each rank its share. Rank 0 gathers the
adapter weights and writes a PEFT adapter folder: the new policy version.
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
import socket
import threading
import time
from datetime import timedelta
from typing import Callable, Iterator, NamedTuple

import pyarrow as pa
import ray
from ray.util.placement_group import remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
import torch
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model, set_peft_model_state_dict
from peft.utils import load_peft_weights
from transformers import AutoModelForCausalLM, AutoTokenizer

from raylign.actors.metrics import RunMetrics
from raylign.actors.placement import place
from raylign.config import LearnerConfig
from raylign.storage import RunStorage, fetch
from raylign.training.losses import dpo_loss, kto_loss, modpo_loss, modpo_margin
from raylign.training.pairs import KTOWeights
from raylign.data.schemas import BASE, PolicyVersion, TrainResult, TrainVariant
from raylign.training.sequences import Batch, Encoded, collate, device_for, encode, sequence_logps
from raylign.training.weights import pack_folder, to_buckets

SHM_COMM_OP = "deepspeed_shm_comm"


class RankInfo(NamedTuple):
    rank: int
    world_size: int
    backend: str  # gloo or nccl


class Learner:
    """One rank of the DeepSpeed group. Plain class; `LearnerGroup` runs it as a Ray actor.

    Every rank holds the same seeded model before DeepSpeed partitions it, walks the same
    seeded batches, and trains on its own slice of each batch (`_rows`); per-example losses
    are summed and scaled so that DeepSpeed's gradient average over ranks is the mean over the
    whole batch, as one rank would compute it."""

    def __init__(self, model_path: str, dtype: str, cfg: LearnerConfig, seed: int, rank: int):
        torch.set_num_threads(cfg.num_threads)
        self.cfg, self.seed, self.rank, self.world = cfg, seed, rank, cfg.world_size
        self.model_path, self.dtype = model_path, getattr(torch, dtype)
        self.device = device_for(cfg.num_gpus)
        # ZeRO-3 partitions parameters across ranks; one rank has nothing to split, and stage 3's
        # per-module gather hooks only cost time (half a step's on the embedded model). Stage 2
        # keeps the same ZeRO optimizer (fp32 master weights under bf16) and the same math.
        self.zero_stage = min(cfg.zero_stage, 2) if self.world == 1 else cfg.zero_stage
        self.holds = BASE.tag  # the policy the model holds (PolicyVersion.tag)
        self.variant: TrainVariant | None = None  # what the training under way trains with
        self._unpublished: dict[str, torch.Tensor] | None = None  # rank 0, full fine-tuning
        self._lock = threading.Lock()
        self._steps_done, self._steps_total = 0, 0
        self._metrics: RunMetrics | None = None  # rank 0's, during train()

    def address(self) -> tuple[str, int]:
        """Where rank 0 listens for the group: this node's address and a free port."""
        with socket.socket() as s:
            s.bind(("", 0))
            return ray.util.get_node_ip_address(), s.getsockname()[1]

    def setup(self, address: tuple[str, int]) -> RankInfo:
        """Join the process group at rank 0's `address`, build the model and the DeepSpeed
        engine; every rank at once."""
        import deepspeed

        master_addr, master_port = address
        os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(self.rank),
                          WORLD_SIZE=str(self.world), LOCAL_RANK="0")
        if self.device.type == "cpu":
            # DeepSpeed JIT-compiles a shared-memory allreduce for CPU at the first
            # init_distributed (~90 s on 2 cores); gloo's allreduce does the same job.
            deepspeed.ops.__compatible_ops__[SHM_COMM_OP] = False
        deepspeed.init_distributed(dist_backend="nccl" if self.device.type == "cuda" else "gloo",
                                   timeout=timedelta(seconds=self.cfg.init_timeout_s), auto_mpi_discovery=False)
        torch.manual_seed(self.seed)  # the same initial adapter on every rank
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=self.dtype)
        if self.cfg.finetune == "lora":
            model = get_peft_model(model, PeftLoraConfig(
                r=self.cfg.lora.r,
                lora_alpha=self.cfg.lora.alpha,
                lora_dropout=self.cfg.lora.dropout,
                target_modules=self.cfg.lora.target_modules,
                task_type="CAUSAL_LM",
            ))
        params = [p for p in model.parameters() if p.requires_grad]
        # A torch optimizer: DeepSpeed's own compile C++ ops on CPU (CPU-NOTES).
        optimizer = torch.optim.AdamW(params, lr=self.cfg.learning_rate)
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, model_parameters=params, config=self._ds_config()
        )
        self.model = self.engine.module
        # Full fine-tuning against the initial model needs that model: a second, frozen copy,
        # partitioned like the first under stage 3 (below it DeepSpeed has nothing to do for a
        # model without an optimizer). LoRA disables its adapter instead: no second copy.
        self.reference = None
        if self.cfg.finetune == "full" and self.cfg.reference == "initial":
            frozen = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=self.dtype).requires_grad_(False)
            if self.zero_stage == 3:
                self.reference = deepspeed.initialize(model=frozen, config=self._ds_config())[0].module.eval()
            else:
                self.reference = frozen.to(self.device).eval()
        return RankInfo(self.rank, torch.distributed.get_world_size(), torch.distributed.get_backend())

    def _ds_config(self) -> dict:
        return {
            "train_micro_batch_size_per_gpu": max(1, self.cfg.batch_size // self.world),
            "gradient_accumulation_steps": 1,
            "gradient_clipping": 1.0,
            "zero_optimization": {"stage": self.zero_stage},
            "bf16": {"enabled": self.dtype == torch.bfloat16},
            "fp16": {"enabled": self.dtype == torch.float16},
            "steps_per_print": 1 << 30,
        }

    def shutdown(self) -> None:
        """Drop the engine and collect garbage; the process group is left for the actor's end,
        since destroying a gloo group in a live process can hang (CPU-NOTES)."""
        self.engine = self.optimizer = self.model = self.reference = self._unpublished = None
        gc.collect()

    def shard_numels(self) -> list[tuple[str, int, int]]:
        """(name, full size, size held here) of every parameter: ZeRO-3 keeps a slice each."""
        return [(n, int(getattr(p, "ds_numel", p.numel())), int(p.ds_tensor.numel()) if hasattr(p, "ds_tensor")
                 else p.numel()) for n, p in self.model.named_parameters()]

    def gathered_trainable(self) -> dict[str, torch.Tensor]:
        """The trainable weights, gathered whole (a collective: every rank calls it)."""
        import deepspeed

        params = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        with deepspeed.zero.GatheredParameters(list(params.values()), modifier_rank=None):
            return {n: p.detach().clone().cpu() for n, p in params.items()}

    def progress(self) -> tuple[int, int]:
        """(steps done, steps planned) of the training call under way."""
        return self._steps_done, self._steps_total

    def policy_files(self, policy: PolicyVersion) -> dict[str, bytes]:
        """The policy's adapter folder as bytes, for the object store (raylign/training/weights.py)."""
        return pack_folder(fetch(policy.path))

    def train(self, variant: TrainVariant, data: pa.Table, cycle: int, storage: RunStorage, start: PolicyVersion,
              kto: KTOWeights, tag: str, checkpoint_start: bool = False) -> TrainResult:
        """One cycle of training from `start`; writes the new policy, named `tag` (and its
        checkpoint), to the run's `storage` and returns it. `checkpoint_start`: another training
        will start from `start` after this one (a selection candidate), so its checkpoint must
        exist: the starting model's is written first if it has none."""
        with self._lock:
            t0 = time.perf_counter()
            self._metrics = RunMetrics(storage.name) if self.rank == 0 else None
            self.variant = variant
            self._load_policy(start, storage)
            if checkpoint_start and not storage.exists(f"checkpoints/{start.tag}"):
                self._save_checkpoint(start.tag, storage)
            rows = data.to_pylist()
            if variant.algorithm == "kto":
                losses = self._train_kto(rows, cycle, kto)
            else:
                losses = self._train_dpo(rows, cycle, modpo=variant.algorithm == "modpo")
            policy = self._save_policy(cycle, tag, storage)
            if self.cfg.save_checkpoints:
                self._save_checkpoint(tag, storage)
            self.holds = tag
            return TrainResult(
                policy=policy,
                examples=len(rows),
                steps=len(losses),
                mean_loss=sum(losses) / len(losses) if losses else float("nan"),
                final_loss=losses[-1] if losses else float("nan"),
                seconds=time.perf_counter() - t0,
                step_losses=tuple(losses),
            )

    def _save_checkpoint(self, tag: str, storage: RunStorage) -> None:
        """Model and optimizer state, each rank its partition (written in this rank's scratch and
        uploaded: ranks on other nodes never share a folder)."""
        with storage.writing(f"checkpoints/{tag}", scratch=f"rank{self.rank}", keep=False) as folder:
            self.engine.save_checkpoint(str(folder.parent), tag=tag)

    def _save_policy(self, cycle: int, tag: str, storage: RunStorage) -> PolicyVersion:
        """LoRA: rank 0 writes a PEFT adapter folder from the gathered adapter weights. Full:
        rank 0 writes the gathered 16-bit weights as a transformers model folder."""
        if self.cfg.finetune == "lora":
            rel = f"adapters/{tag}"
            weights = self.gathered_trainable()
            if self.rank == 0:
                with storage.writing(rel) as folder:
                    self.model.save_pretrained(folder, state_dict=weights)
        else:
            rel = f"policies/{tag}"
            state = self._full_state_dict()
            if self.rank == 0:
                with storage.writing(rel) as folder:
                    # A copy: save_pretrained drops tied weights (lm_head) from the dict it is given.
                    self.model.save_pretrained(folder, state_dict=dict(state))
                    self.tokenizer.save_pretrained(folder)
                self._unpublished = state  # kept for full_weight_buckets: no second gather
        torch.distributed.barrier()
        return PolicyVersion(cycle, self.cfg.finetune, storage.uri(rel))

    def _full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """The whole model's 16-bit weights on rank 0 (None elsewhere), gathered layer by layer
        (a collective: every rank calls it)."""
        if self.zero_stage == 3:
            state = self.engine._zero3_consolidated_16bit_state_dict()
            return state if self.rank == 0 else None
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()} if self.rank == 0 else None

    def full_weight_buckets(self, policy: PolicyVersion, bucket_bytes: int):
        """Rank 0: `policy`'s weights as safetensors buckets (raylign/training/weights.py): those it
        gathered when it trained it, else (a restarted rank, a resumed run) its model folder.
        The state dict keeps a tied lm_head, which the engines need."""
        state, self._unpublished = self._unpublished, None
        if state is None or policy.tag != self.holds:
            state = AutoModelForCausalLM.from_pretrained(fetch(policy.path), dtype=self.dtype).state_dict()
        yield from to_buckets(state.items(), bucket_bytes)

    def _load_policy(self, start: PolicyVersion, storage: RunStorage) -> None:
        """After an actor restart the model is the initial one: load the policy to train on,
        from its DeepSpeed checkpoint when there is one (optimizer state too), else from the
        adapter folder; either downloaded from the run's storage into this node's scratch."""
        tag = start.tag
        if tag == self.holds:
            return
        import deepspeed

        if storage.exists(f"checkpoints/{tag}"):
            folder = storage.local(f"checkpoints/{tag}")
            loaded, _ = self.engine.load_checkpoint(str(folder.parent), tag=tag)
            if loaded is None:  # DeepSpeed only warns about a checkpoint it cannot find
                raise FileNotFoundError(f"DeepSpeed found no checkpoint in {folder}, the copy of "
                                        f"{storage.uri(f'checkpoints/{tag}')}")
        elif start.kind == "lora" and start.path is not None:
            state = load_peft_weights(str(fetch(start.path)))
            params = [p for p in self.model.parameters() if p.requires_grad]
            with deepspeed.zero.GatheredParameters(params, modifier_rank=0):
                if self.rank == 0:
                    set_peft_model_state_dict(self.model, state)
        else:
            raise ValueError(f"policy {tag} has neither a checkpoint under {storage.uri('checkpoints')} nor an "
                             "adapter folder to resume from")
        self.holds = tag

    # -- data ---------------------------------------------------------------------------

    def _encode(self, prompt: list[dict], completion: list[dict]) -> Encoded:
        return encode(self.tokenizer, prompt, completion[0]["content"], self.cfg.max_length)

    def _collate(self, encoded: list[Encoded]) -> Batch:
        return Batch(*(t.to(self.device) for t in collate(encoded, self.tokenizer.pad_token_id)))

    def _batches(self, n: int, cycle: int, epoch: int) -> list[list[int]]:
        order = list(range(n))
        random.Random(self.seed * 1_000_003 + cycle * 1_009 + epoch).shuffle(order)
        size = self.cfg.batch_size
        return [order[i : i + size] for i in range(0, n, size)]

    def _global_sum(self, value: float) -> float:
        """Sum of `value` over the ranks (a collective; with one rank, `value`)."""
        if self.world == 1:  # a gloo round trip per step for nothing
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return float(t.item())

    def _rows(self, idx: list[int]) -> tuple[list[int], bool]:
        """This rank's slice of a batch, and whether it is real: a rank left without examples
        runs the batch's first at weight 0, since ZeRO-3 needs every rank in every forward."""
        mine = idx[self.rank :: self.world]
        return (mine, True) if mine else (idx[:1], False)

    @torch.no_grad()
    def _reference_logps(self, encoded: list[Encoded]) -> torch.Tensor:
        """Reference log-probabilities, once per cycle, before the policy moves: each rank
        computes its slice of every batch and the ranks exchange them."""
        self.model.eval()
        mine: dict[int, float] = {}
        with self._reference() as reference:
            for start in range(0, len(encoded), self.cfg.batch_size):
                rows, real = self._rows(list(range(start, min(start + self.cfg.batch_size, len(encoded)))))
                logps = sequence_logps(reference, self._collate([encoded[i] for i in rows])).logps
                if real:
                    mine.update(zip(rows, logps.tolist()))
        everyone: list[dict[int, float]] = [mine]
        if self.world > 1:  # one rank has nothing to exchange
            everyone = [{} for _ in range(self.world)]
            torch.distributed.all_gather_object(everyone, mine)
        merged = {i: v for part in everyone for i, v in part.items()}
        return torch.tensor([merged[i] for i in range(len(encoded))], device=self.device)

    @contextlib.contextmanager
    def _reference(self) -> Iterator[torch.nn.Module]:
        """The reference model, for a whole pass: PEFT's disable_adapter walks every module on
        entry and exit, once a pass rather than once a batch."""
        if self.cfg.reference == "previous":  # the policy as the cycle starts
            yield self.model
        elif self.reference is not None:  # full fine-tuning: the frozen initial model
            yield self.reference
        else:
            with self.model.disable_adapter():  # LoRA: the base is the initial model
                yield self.model

    def _sft_term(self, logps: torch.Tensor, num_tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean token NLL of the preferred answers of the whole batch (TRL's "sft" loss term),
        this rank's share of it: token counts are summed over the ranks."""
        if self.cfg.sft_weight == 0:
            return torch.zeros((), device=self.device)
        tokens = self._global_sum(float(num_tokens[mask].sum()))
        if tokens == 0:
            return torch.zeros((), device=self.device)
        return self.cfg.sft_weight * -(logps[mask].sum()) * self.world / tokens

    def _fit(self, n: int, cycle: int, shard_loss: Callable[[list[int]], torch.Tensor]) -> list[float]:
        """`epochs` shuffled passes over n examples. `shard_loss(batch)` returns this rank's
        share: the sum of its examples' losses x world / batch size, so DeepSpeed's gradient
        average over ranks is the batch mean. Returns each step's batch-mean loss."""
        batches = [idx for e in range(self.cfg.epochs) for idx in self._batches(n, cycle, e)]
        self._steps_done, self._steps_total = 0, len(batches)
        self.engine.train()
        losses = []
        for step, idx in enumerate(batches):
            started = time.perf_counter()
            for group in self.optimizer.param_groups:  # linear decay over the cycle
                group["lr"] = self.variant.learning_rate * (1 - step / len(batches))
            loss = shard_loss(idx)
            self.engine.backward(loss)
            self.engine.step()
            losses.append(self._global_sum(loss.item()) / self.world)
            self._steps_done += 1
            if self._metrics is not None:
                self._metrics.train_step(time.perf_counter() - started)
        return losses

    # -- DPO ------------------------------------------------------------------------------

    def _train_dpo(self, rows: list[dict], cycle: int, modpo: bool) -> list[float]:
        """DPO, or MODPO: the same pairs with the other objectives' score margins."""
        if not rows:
            return []
        chosen = [self._encode(r["prompt"], r["chosen"]) for r in rows]
        rejected = [self._encode(r["prompt"], r["rejected"]) for r in rows]
        ref_chosen, ref_rejected = self._reference_logps(chosen), self._reference_logps(rejected)
        margins = self._modpo_margins(rows) if modpo else None

        def shard_loss(idx: list[int]) -> torch.Tensor:
            mine, real = self._rows(idx)
            n = len(mine)
            out = sequence_logps(self.model, self._collate([chosen[i] for i in mine] + [rejected[i] for i in mine]))
            if margins is None:
                pref = dpo_loss(
                    out.logps[:n], out.logps[n:], ref_chosen[mine], ref_rejected[mine],
                    beta=self.variant.beta, loss_type=self.variant.loss_type,
                    chosen_lengths=out.num_tokens[:n], rejected_lengths=out.num_tokens[n:],
                )
            else:
                pref = modpo_loss(out.logps[:n], out.logps[n:], ref_chosen[mine], ref_rejected[mine],
                                  beta=self.variant.beta, weight=self.cfg.modpo_weights["safety"],
                                  margin=margins[mine])
            is_chosen = (torch.arange(2 * n, device=self.device) < n) & real
            loss = pref.sum() * self.world / len(idx) + self._sft_term(out.logps, out.num_tokens, is_chosen)
            return loss if real else loss * 0

        return self._fit(len(rows), cycle, shard_loss)

    def _modpo_margins(self, rows: list[dict]) -> torch.Tensor:
        """Σ_{j≠safety} w_j (r_j(chosen) − r_j(rejected)) per pair, from the judges' stored scores."""
        def scores(column: str) -> dict[str, torch.Tensor]:
            per_row = [dict(r[column] or {}) for r in rows]
            missing = {j for j in self.cfg.modpo_weights for s in per_row if j not in s}
            if missing:
                raise ValueError(f"MODPO needs every pair scored on {sorted(self.cfg.modpo_weights)}; the judges "
                                 f"stored no {sorted(missing)} score for some (learner.modpo_weights)")
            return {j: torch.tensor([s[j] for s in per_row], device=self.device) for j in self.cfg.modpo_weights}

        return modpo_margin(scores("chosen_scores"), scores("rejected_scores"), self.cfg.modpo_weights, "safety")

    # -- KTO ------------------------------------------------------------------------------

    def _train_kto(self, rows: list[dict], cycle: int, weights: KTOWeights) -> list[float]:
        if len(rows) < 2:
            return []
        matched = [self._encode(r["prompt"], r["completion"]) for r in rows]
        # KL baseline: each prompt with another example's completion (a fixed derangement).
        shift = [(i + 1) % len(rows) for i in range(len(rows))]
        mismatched = [self._encode(rows[i]["prompt"], rows[j]["completion"]) for i, j in enumerate(shift)]
        ref_matched, ref_mismatched = self._reference_logps(matched), self._reference_logps(mismatched)
        desirable = torch.tensor([bool(r["label"]) for r in rows], device=self.device)

        def shard_loss(idx: list[int]) -> torch.Tensor:
            mine, real = self._rows(idx)
            with torch.no_grad():  # the batch's KL estimate, over every rank's examples
                shifted = sequence_logps(self.model, self._collate([mismatched[i] for i in mine])).logps
                diff = float((shifted - ref_mismatched[mine]).sum()) if real else 0.0
                kl = torch.tensor(self._global_sum(diff) / len(idx), device=self.device)
            out = sequence_logps(self.model, self._collate([matched[i] for i in mine]))
            pref = kto_loss(
                out.logps, ref_matched[mine], desirable[mine], kl, beta=self.variant.beta,
                desirable_weight=weights.desirable, undesirable_weight=weights.undesirable,
            )
            loss = pref.sum() * self.world / len(idx) + self._sft_term(out.logps, out.num_tokens, desirable[mine] & real)
            return loss if real else loss * 0

        return self._fit(len(rows), cycle, shard_loss)


def _node_of_this_process() -> str:
    return ray.get_runtime_context().get_node_id()


class LearnerGroup:
    """`cfg.world_size` ranks in one placement group (one bundle each) and one process group.

    Rank 0 publishes its address and a free port; every rank then joins with a timeout. Calls
    fan out to every rank (ZeRO needs them all) and rank 0's result is the group's. A rank that
    dies during training takes the whole group down with it (the others would wait in a
    collective until it timed out): `train` replaces every rank and runs the cycle's training
    again from its starting policy, `learner.max_train_retries` times."""

    def __init__(self, model_path: str, dtype: str, cfg: LearnerConfig, seed: int, timeout_s: float):
        self.cfg, self.timeout_s = cfg, timeout_s
        self._rank_args = (model_path, dtype, cfg, seed)  # one seed: the same model and batches on every rank
        self.placement = place("learners", cfg, cfg.world_size, timeout_s)
        self._start_ranks()

    def _start_ranks(self) -> None:
        actor = ray.remote(Learner)
        self.ranks = [
            actor.options(
                num_cpus=self.cfg.num_cpus, num_gpus=self.cfg.num_gpus, resources=self.cfg.resources,
                max_concurrency=2,  # progress() answers while train() runs
                scheduling_strategy=PlacementGroupSchedulingStrategy(self.placement, placement_group_bundle_index=rank),
            ).remote(*self._rank_args, rank)
            for rank in range(self.cfg.world_size)
        ]
        # Not waited for here: the ranks start while the other roles are placed.
        address = self.ranks[0].address.remote()
        self._setup = [r.setup.remote(address) for r in self.ranks]

    def ready(self) -> list[RankInfo]:
        """Waits until every rank has joined the group and built its engine."""
        return ray.get(self._setup, timeout=self.cfg.init_timeout_s + self.timeout_s)

    def call(self, method: str, *args) -> list:
        """`method` on every rank at once (collectives need them all); their results."""
        return ray.get([getattr(r, method).remote(*args) for r in self.ranks], timeout=self.timeout_s)

    def train(self, variant: TrainVariant, data: pa.Table, cycle: int, storage: RunStorage, start: PolicyVersion,
              kto: KTOWeights, tag: str, checkpoint_start: bool = False,
              on_progress: Callable[[int, int], None] = lambda done, total: None) -> TrainResult:
        """One cycle's training from `start` on every rank (Learner.train); rank 0's result.
        `on_progress` hears (steps done, steps planned) about twice a second."""
        data = ray.put(data)  # once, for every rank and every try
        retries = 0
        while True:
            try:
                self.ready()
                refs = [r.train.remote(variant, data, cycle, storage, start, kto, tag, checkpoint_start)
                        for r in self.ranks]
                return self._wait(refs, on_progress)._replace(retries=retries)
            except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as e:
                # The survivors of a dead rank often fail first (gloo: connection closed by
                # peer): what decides is whether a rank is gone, not which error came back first.
                dead = self._dead_ranks()
                if not dead:
                    raise  # the training itself failed: running it again would fail the same way
                if retries == self.cfg.max_train_retries:
                    raise RuntimeError(
                        f"cycle {cycle} training: learner rank(s) {dead} died, on each of {retries + 1} tries "
                        f"(learner.max_train_retries {self.cfg.max_train_retries})") from e
                retries += 1
                self._replace_ranks()

    def _wait(self, refs: list[ray.ObjectRef], on_progress: Callable[[int, int], None]) -> TrainResult:
        pending = refs
        while pending:
            done, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
            ray.get(done)  # a rank that died or failed raises now, not when the others time out
            on_progress(*ray.get(self.ranks[0].progress.remote(), timeout=self.timeout_s))
        return ray.get(refs[0])

    def _dead_ranks(self) -> list[int]:
        """The ranks whose actor is gone: a call to it fails as an actor error."""
        dead = []
        for i, rank in enumerate(self.ranks):
            try:
                ray.get(rank.progress.remote(), timeout=self.timeout_s)  # answers while train() runs
            except ray.exceptions.RayActorError:
                dead.append(i)
        return dead

    def _replace_ranks(self) -> None:
        """Kill every rank (the survivors are stuck in a collective with the dead one) and start
        a fresh group in the same placement group; the next training loads its starting policy
        from the checkpoint (from the run's storage, on whichever node the ranks land)."""
        for rank in self.ranks:
            ray.kill(rank, no_restart=True)
        self._wait_for_bundles()
        self._start_ranks()

    def _wait_for_bundles(self) -> None:
        """Until a process runs on every bundle of the placement group. A lost node's bundles are
        placed again only once Ray has declared the node dead, seconds after its processes died:
        a rank started before that would be placed on the dead node and die with it."""
        deadline = time.monotonic() + self.timeout_s
        probe = ray.remote(num_cpus=0, max_retries=0)(_node_of_this_process)
        for bundle in range(self.cfg.world_size):
            strategy = PlacementGroupSchedulingStrategy(self.placement, placement_group_bundle_index=bundle)
            while True:
                try:
                    ray.get(probe.options(scheduling_strategy=strategy).remote(), timeout=10)
                    break
                except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"learner placement bundle {bundle} was not placed again within "
                                           f"{self.timeout_s:.0f}s of a rank's death") from None

    def publish(self, policy: PolicyVersion) -> PolicyVersion:
        """`policy` with its files in the object store, so engines on any node can load it.

        The driver calls this, so the driver owns the object: it outlives a learner restart,
        and the bytes go from the learner's node to the engines' without passing through here."""
        if policy.kind == "lora":
            return policy._replace(payload=(self.ranks[0].policy_files.remote(policy),))
        # Full weights: rank 0 streams the buckets into the object store.
        stream = self.ranks[0].full_weight_buckets.options(num_returns="streaming").remote(
            policy, self.cfg.weight_bucket_mb << 20)
        return policy._replace(payload=tuple(stream))

    def shutdown(self) -> None:
        ray.wait([r.shutdown.remote() for r in self.ranks], num_returns=len(self.ranks), timeout=60)
        for rank in self.ranks:
            ray.kill(rank)
        remove_placement_group(self.placement)
