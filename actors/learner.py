"""Learner: trains the policy on a cycle's pairs (DPO) or examples (KTO) with LoRA.

Supports: DPO (sigmoid, ipo, hinge, robust) plus an optional SFT term on the chosen answer;
KTO with class weights and a KL baseline; the reference policy as the initial model (LoRA
adapter disabled: no second copy of the weights) or the previous cycle's policy, its
log-probabilities computed once per cycle before training. The model stays loaded across
cycles; each cycle ends by writing a PEFT adapter folder, which is the new policy version.

`LearnerGroup` places the ranks and fans calls out. This learner is one rank on one device;
the DeepSpeed ZeRO group slots in behind the same `LearnerGroup.train`.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Callable

import pyarrow as pa
import ray
import torch
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model, set_peft_model_state_dict
from peft.utils import load_peft_weights
from transformers import AutoModelForCausalLM, AutoTokenizer

from raylign.config import LearnerConfig
from raylign.losses import dpo_loss, kl_estimate, kto_loss
from raylign.pairs import KTOWeights
from raylign.schemas import PolicyVersion, TrainResult
from raylign.sequences import Batch, Encoded, collate, device_for, encode, sequence_logps
from raylign.weights import pack_folder


class Learner:
    """One training rank. Plain class; `LearnerGroup` runs it as a Ray actor."""

    def __init__(self, model_path: str, dtype: str, cfg: LearnerConfig, seed: int):
        torch.set_num_threads(cfg.num_threads)
        torch.manual_seed(seed)
        self.cfg, self.seed = cfg, seed
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.device = device_for(cfg.num_gpus)
        base = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype)).to(self.device)
        lora = PeftLoraConfig(
            r=cfg.lora.r,
            lora_alpha=cfg.lora.alpha,
            lora_dropout=cfg.lora.dropout,
            target_modules=cfg.lora.target_modules,
            task_type="CAUSAL_LM",
        )
        self.model = get_peft_model(base, lora)
        self.version = 0
        self._lock = threading.Lock()
        self._steps_done, self._steps_total = 0, 0

    def progress(self) -> tuple[int, int]:
        """(steps done, steps planned) of the training call under way."""
        return self._steps_done, self._steps_total

    def policy_files(self, policy: PolicyVersion) -> dict[str, bytes]:
        """The policy's adapter folder as bytes, for the object store (raylign/weights.py)."""
        return pack_folder(policy.path)

    def train(
        self, algorithm: str, data: pa.Table, cycle: int, out_dir: str, start: PolicyVersion, kto: KTOWeights
    ) -> TrainResult:
        with self._lock:
            t0 = time.perf_counter()
            self._load_policy(start)
            rows = data.to_pylist()
            if algorithm == "dpo":
                losses = self._train_dpo(rows, cycle)
            else:
                losses = self._train_kto(rows, cycle, kto)
            adapter_dir = Path(out_dir) / f"cycle_{cycle:03d}"
            self.model.save_pretrained(adapter_dir)
            self.version = cycle
            return TrainResult(
                policy=PolicyVersion(cycle, "lora", str(adapter_dir)),
                examples=len(rows),
                steps=len(losses),
                mean_loss=sum(losses) / len(losses) if losses else float("nan"),
                final_loss=losses[-1] if losses else float("nan"),
                seconds=time.perf_counter() - t0,
            )

    def _load_policy(self, start: PolicyVersion) -> None:
        # After an actor restart the in-memory adapter is fresh: reload the policy to train on.
        if start.version == self.version:
            return
        if start.path is None:
            raise ValueError(f"policy version {start.version} has no adapter to resume from")
        set_peft_model_state_dict(self.model, load_peft_weights(start.path))
        self.version = start.version

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

    @torch.no_grad()
    def _reference_logps(self, encoded: list[Encoded]) -> torch.Tensor:
        """Reference log-probabilities, once per cycle, before the policy moves."""
        self.model.eval()
        out = []
        for i in range(0, len(encoded), self.cfg.batch_size):
            batch = self._collate(encoded[i : i + self.cfg.batch_size])
            if self.cfg.reference == "initial":
                with self.model.disable_adapter():
                    out.append(sequence_logps(self.model, batch).logps)
            else:
                out.append(sequence_logps(self.model, batch).logps)
        return torch.cat(out) if out else torch.zeros(0, device=self.device)

    def _optimizer(self, total_steps: int):
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.cfg.learning_rate)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / max(1, total_steps))
        self._steps_done, self._steps_total = 0, total_steps
        return optimizer, scheduler

    def _step(self, loss: torch.Tensor, optimizer, scheduler) -> float:
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        scheduler.step()
        self._steps_done += 1
        return loss.item()

    def _sft_term(self, logps, num_tokens, mask: torch.Tensor) -> torch.Tensor:
        """Mean token NLL of the preferred answers (TRL's "sft" loss term)."""
        if self.cfg.sft_weight == 0 or not mask.any():
            return torch.zeros((), device=self.device)
        return self.cfg.sft_weight * -(logps[mask].sum() / num_tokens[mask].sum())

    def _fit(self, n: int, cycle: int, batch_loss: Callable[[list[int]], torch.Tensor]) -> list[float]:
        """`epochs` shuffled passes over n examples; `batch_loss` maps example indices to a loss."""
        epochs = [self._batches(n, cycle, e) for e in range(self.cfg.epochs)]
        optimizer, scheduler = self._optimizer(sum(len(b) for b in epochs))
        self.model.train()
        return [self._step(batch_loss(idx), optimizer, scheduler) for batches in epochs for idx in batches]

    # -- DPO ------------------------------------------------------------------------------

    def _train_dpo(self, rows: list[dict], cycle: int) -> list[float]:
        if not rows:
            return []
        chosen = [self._encode(r["prompt"], r["chosen"]) for r in rows]
        rejected = [self._encode(r["prompt"], r["rejected"]) for r in rows]
        ref_chosen, ref_rejected = self._reference_logps(chosen), self._reference_logps(rejected)

        def batch_loss(idx: list[int]) -> torch.Tensor:
            n = len(idx)
            out = sequence_logps(self.model, self._collate([chosen[i] for i in idx] + [rejected[i] for i in idx]))
            pref = dpo_loss(
                out.logps[:n], out.logps[n:], ref_chosen[idx], ref_rejected[idx],
                beta=self.cfg.beta, loss_type=self.cfg.loss_type,
                chosen_lengths=out.num_tokens[:n], rejected_lengths=out.num_tokens[n:],
            )
            is_chosen = torch.arange(2 * n, device=self.device) < n
            return pref.mean() + self._sft_term(out.logps, out.num_tokens, is_chosen)

        return self._fit(len(rows), cycle, batch_loss)

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

        def batch_loss(idx: list[int]) -> torch.Tensor:
            with torch.no_grad():
                kl = kl_estimate(sequence_logps(self.model, self._collate([mismatched[i] for i in idx])).logps,
                                 ref_mismatched[idx])
            out = sequence_logps(self.model, self._collate([matched[i] for i in idx]))
            pref = kto_loss(
                out.logps, ref_matched[idx], desirable[idx], kl, beta=self.cfg.beta,
                desirable_weight=weights.desirable, undesirable_weight=weights.undesirable,
            )
            return pref.mean() + self._sft_term(out.logps, out.num_tokens, desirable[idx])

        return self._fit(len(rows), cycle, batch_loss)


class LearnerGroup:
    """Places the learner ranks (one bundle each) and fans training calls out."""

    def __init__(self, model_path: str, dtype: str, cfg: LearnerConfig, seed: int):
        self.cfg = cfg
        actor = ray.remote(Learner).options(
            num_cpus=cfg.num_cpus,
            num_gpus=cfg.num_gpus,
            resources=cfg.resources,
            max_concurrency=2,  # progress() answers while train() runs
        )
        self.ranks = [actor.remote(model_path, dtype, cfg, seed + rank) for rank in range(cfg.world_size)]

    def train_async(self, algorithm: str, data: pa.Table, cycle: int, out_dir: str,
                    start: PolicyVersion, kto: KTOWeights) -> list[ray.ObjectRef]:
        return [r.train.remote(algorithm, data, cycle, out_dir, start, kto) for r in self.ranks]

    def progress(self, timeout_s: float) -> tuple[int, int]:
        return ray.get(self.ranks[0].progress.remote(), timeout=timeout_s)

    def publish(self, policy: PolicyVersion) -> PolicyVersion:
        """`policy` with its files in the object store, so engines on any node can load it.

        The driver calls this, so the driver owns the object: it outlives a learner restart,
        and the bytes go from the learner's node to the engines' without passing through here."""
        return policy._replace(payload=(self.ranks[0].policy_files.remote(policy),))
