"""Learner throughput on 1 and 2 DeepSpeed ranks, the loss equivalence, and raylign against TRL, in one run.

    python bench/learner.py [--pairs 256] [--reps 3] [--set learner.zero_stage=2 ...]

Both groups are started with the same config (the embedded default's learner unless --set
says otherwise), from the same seeded adapter. First each trains one step on the same 8
pairs: `loss_abs_diff` is the difference of those two losses. Then each trains --pairs DPO
pairs for one epoch, alternating, --reps times: samples/s is pairs / seconds of the whole
train call (reference log-probabilities, steps, the adapter and checkpoint written), median of the reps.

Against TRL (`dpo_over_trl`, `kto_over_trl`): the 1-rank group and TRL's DPOTrainer / KTOTrainer in this
process (as many torch threads as a rank), in the same rounds, on the same model, LoRA settings, pairs
(KTO: each pair's chosen answer a desirable example, its rejected one an undesirable one, shuffled),
batch size, beta, learning rate (linear decay, no warm-up), max length and number of steps. TRL is
timed as a user runs it: the trainer built (tokenisation and, with `precompute_ref_log_probs=True`,
the reference log-probabilities over the whole set, once, as raylign computes them), `train()` (its
default end-of-training checkpoint, as raylign's) and `save_model()` (the adapter); loading the model
is left out of both. TRL runs without gradient checkpointing and keeps dropout, as raylign does. The losses
are the same (DPO: learner.loss_type plus learner.sft_weight x SFT) but for the SFT term raylign's KTO adds on desirable
examples, which costs no forward pass.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from importlib.metadata import version
from typing import Callable

import pyarrow as pa
import ray
import torch

from raylign.actors.learner import LearnerGroup
from raylign.config import LearnerConfig, load_config
from raylign.driver import resolve_model
from raylign.training.pairs import KTOWeights
from raylign.data.prompts import load_prompts, split
from raylign.data.schemas import BASE, KTO_EXAMPLES, PAIRS, TrainVariant, assistant_turn, user_turn
from raylign.storage import RunStorage

STYLES = [
    "I cannot help with this request. It could cause real harm, so I have to say no.",
    "Please check with a healthcare provider first; the right choice depends on your health.",
    "Sure. Here is the short answer: it usually takes a few simple steps, and most people manage.",
]


def pairs_table(prompts: list[str], n: int, seed: int) -> pa.Table:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        chosen, rejected = rng.sample(STYLES, 2)
        rows.append({"cycle": 1, "prompt_id": f"b{i}", "harmful_level": i % 4,
                     "prompt": user_turn(prompts[i % len(prompts)]), "chosen": assistant_turn(chosen),
                     "rejected": assistant_turn(rejected), "chosen_label": "Refuse", "rejected_label": "Accept",
                     "chosen_score": 1.0, "rejected_score": 0.0})
    return pa.Table.from_pylist(rows, schema=PAIRS)


def kto_table(pairs: pa.Table, seed: int) -> pa.Table:
    """Each pair's chosen answer a desirable example and its rejected one an undesirable one, shuffled:
    in pair order TRL's in-batch KL completion (the previous example's) would be the same prompt's other answer."""
    rows = [{"cycle": pair["cycle"], "prompt_id": pair["prompt_id"], "harmful_level": pair["harmful_level"],
             "prompt": pair["prompt"], "completion": pair[side], "label": side == "chosen",
             "score": pair[f"{side}_score"]}
            for pair in pairs.to_pylist() for side in ("chosen", "rejected")]
    random.Random(seed).shuffle(rows)
    return pa.Table.from_pylist(rows, schema=KTO_EXAMPLES)


class Ranks:
    """A learner group trained as a cycle trains it: each call from the policy the previous one wrote."""

    def __init__(self, group: LearnerGroup, storage: RunStorage, learner: LearnerConfig):
        self.group, self.storage, self.learner = group, storage, learner
        self.policy, self.cycle, self.last_loss = BASE, 0, float("nan")

    def train(self, algorithm: str, data: pa.Table, kto: KTOWeights) -> float:
        """Seconds of one train call: reference log-probabilities, steps, adapter and checkpoint written."""
        self.cycle += 1
        variant = TrainVariant(algorithm, self.learner.beta, self.learner.learning_rate, self.learner.loss_type)
        t0 = time.perf_counter()
        (result, *_) = self.group.call("train", variant, data, self.cycle, self.storage, self.policy, kto,
                                       f"cycle_{self.cycle:03d}")
        self.policy = result.policy
        self.last_loss = result.mean_loss
        return time.perf_counter() - t0


class TRL:
    """TRL's DPOTrainer and KTOTrainer in this process, each run on a freshly loaded model."""

    def __init__(self, model_path: str, dtype: str, learner: LearnerConfig, seed: int, out: str):
        from transformers import AutoTokenizer

        self.model_path, self.dtype, self.learner, self.seed, self.out = model_path, dtype, learner, seed, out
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.runs = 0

    def _model(self):
        """The model with a fresh adapter of the learner's LoRA settings (loading is not timed)."""
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        torch.manual_seed(self.seed)
        model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=getattr(torch, self.dtype))
        lora = self.learner.lora
        return get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                target_modules=lora.target_modules, task_type="CAUSAL_LM"))

    def _args(self, algorithm: str, kto: KTOWeights):
        from trl import DPOConfig, KTOConfig

        self.runs += 1
        common = dict(
            output_dir=f"{self.out}/trl-{self.runs}", per_device_train_batch_size=self.learner.batch_size,
            num_train_epochs=self.learner.epochs, learning_rate=self.learner.learning_rate, lr_scheduler_type="linear",
            max_grad_norm=1.0, beta=self.learner.beta, max_length=self.learner.max_length, seed=self.seed,
            precompute_ref_log_probs=True,  # once, before training, as raylign's learner does
            gradient_checkpointing=False, disable_dropout=False,  # as raylign's learner trains
            use_cpu=True, bf16=False, report_to=[], disable_tqdm=True,
        )
        if algorithm == "kto":
            return KTOConfig(**common, desirable_weight=kto.desirable, undesirable_weight=kto.undesirable)
        sft = ["sft"] if self.learner.sft_weight else []
        return DPOConfig(**common, loss_type=[self.learner.loss_type, *sft],
                         loss_weights=[1.0, self.learner.sft_weight][: 1 + len(sft)])

    def train(self, algorithm: str, data: pa.Table, kto: KTOWeights) -> float:
        """Seconds of trainer built (tokenisation, reference log-probabilities), train() and save_model()."""
        from datasets import Dataset
        from transformers import PrinterCallback
        from trl import DPOTrainer, KTOTrainer

        columns = ["prompt", "completion", "label"] if algorithm == "kto" else ["prompt", "chosen", "rejected"]
        dataset, model, args = Dataset(data.select(columns)), self._model(), self._args(algorithm, kto)
        trainer_class = KTOTrainer if algorithm == "kto" else DPOTrainer
        t0 = time.perf_counter()
        trainer = trainer_class(model=model, args=args, train_dataset=dataset, processing_class=self.tokenizer)
        trainer.remove_callback(PrinterCallback)  # its log lines, not its work: the metrics are computed anyway
        trainer.train()
        trainer.save_model()
        return time.perf_counter() - t0


def quiet_trl() -> None:
    """No progress bars or info logs from TRL, transformers and datasets between the bench's lines."""
    import datasets
    import transformers

    os.environ["TQDM_DISABLE"] = "1"  # TRL's reference log-probability pass reads it
    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def rounds(contenders: dict[str, Callable[[], float]], sizes: dict[str, int], reps: int) -> dict[str, float]:
    """Each contender once a round, in turn, `reps` rounds: the median of its samples per second."""
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(reps):
        for name, run in contenders.items():
            rates[name].append(sizes[name] / run())
    return {name: statistics.median(r) for name, r in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    cfg = load_config(overrides=["learner.epochs=1", *args.set])
    model_path = resolve_model(cfg, print)
    prompts = split(load_prompts(cfg.prompts), cfg.prompts.train_split, None, cfg.seed)["prompt"].to_pylist()
    out = tempfile.mkdtemp(prefix="bench-learner-")
    torch.set_num_threads(cfg.learner.num_threads)  # TRL runs here: as many threads as a rank has
    quiet_trl()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)

    ranks = {}
    for world in (1, 2):
        learner = cfg.learner.model_copy(update={"world_size": world})
        group = LearnerGroup(model_path, cfg.model.dtype, learner, cfg.seed, timeout_s=600)
        ranks[world] = Ranks(group, RunStorage(f"{out}/w{world}"), learner)
    for r in ranks.values():
        r.group.ready()
    kto = KTOWeights(1.0, 1.0)
    for r in ranks.values():
        r.train("dpo", pairs_table(prompts, 8, cfg.seed), kto)
    loss_abs_diff = abs(ranks[1].last_loss - ranks[2].last_loss)
    print(f"one step on the same 8 pairs: loss {ranks[1].last_loss:.8f} (1 rank) vs {ranks[2].last_loss:.8f} "
          f"(2 ranks), |diff| {loss_abs_diff:.2e}")

    pairs = pairs_table(prompts, args.pairs, cfg.seed + 1)
    examples = kto_table(pairs, cfg.seed + 2)
    trl = TRL(model_path, cfg.model.dtype, cfg.learner, cfg.seed, out)
    contenders = {
        "dpo1": lambda: ranks[1].train("dpo", pairs, kto),
        "dpo2": lambda: ranks[2].train("dpo", pairs, kto),
        "dpo_trl": lambda: trl.train("dpo", pairs, kto),
        "kto1": lambda: ranks[1].train("kto", examples, kto),
        "kto_trl": lambda: trl.train("kto", examples, kto),
    }
    sizes = {name: examples.num_rows if name.startswith("kto") else pairs.num_rows for name in contenders}
    per_s = rounds(contenders, sizes, args.reps)
    for r in ranks.values():
        r.group.shutdown()
    ray.shutdown()

    print(f"{args.pairs} DPO pairs, batch {cfg.learner.batch_size}, ZeRO stage {cfg.learner.zero_stage} "
          f"(1 rank: at most 2, the learner's choice), median of {args.reps}:")
    for world in (1, 2):
        print(f"  {world} rank(s): {per_s[f'dpo{world}']:7.1f} pairs/s")
    print(f"raylign (1 rank) against TRL {version('trl')} (precompute_ref_log_probs=True), "
          f"{examples.num_rows} KTO examples, median of {args.reps}:")
    print(f"  DPO: {per_s['dpo1']:7.1f} vs {per_s['dpo_trl']:7.1f} pairs/s: {per_s['dpo1'] / per_s['dpo_trl']:.2f}x")
    print(f"  KTO: {per_s['kto1']:7.1f} vs {per_s['kto_trl']:7.1f} examples/s: "
          f"{per_s['kto1'] / per_s['kto_trl']:.2f}x")
    print(json.dumps({"samples_per_s_1": round(per_s["dpo1"], 2), "samples_per_s_2": round(per_s["dpo2"], 2),
                      "loss_abs_diff": loss_abs_diff, "two_over_one": round(per_s["dpo2"] / per_s["dpo1"], 3),
                      "trl_dpo_per_s": round(per_s["dpo_trl"], 2), "kto_per_s_1": round(per_s["kto1"], 2),
                      "trl_kto_per_s": round(per_s["kto_trl"], 2),
                      "dpo_over_trl": round(per_s["dpo1"] / per_s["dpo_trl"], 3),
                      "kto_over_trl": round(per_s["kto1"] / per_s["kto_trl"], 3)}))


if __name__ == "__main__":
    main()
