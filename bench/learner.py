"""Learner throughput on 1 and 2 DeepSpeed ranks, and the loss equivalence, in one run.

    python bench/learner.py [--pairs 256] [--reps 3] [--set learner.zero_stage=2 ...]

Both groups are started with the same config (the embedded default's learner unless --set
says otherwise), from the same seeded adapter. First each trains one step on the same 8
pairs: `loss_abs_diff` is the difference of those two losses. Then each trains --pairs DPO
pairs for one epoch, alternating, --reps times: samples/s is pairs / seconds of the whole
train call (reference log-probabilities, steps, the adapter written), median of the reps.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time

import pyarrow as pa
import ray

from raylign.actors.learner import LearnerGroup
from raylign.config import load_config
from raylign.driver import resolve_model
from raylign.training.pairs import KTOWeights
from raylign.data.prompts import load_prompts, split
from raylign.data.schemas import BASE, PAIRS, assistant_turn, user_turn

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
        rows.append({"cycle": 1, "prompt_id": f"b{i}", "harmful_level": i % 4, "prompt": user_turn(prompts[i % len(prompts)]),
                     "chosen": assistant_turn(chosen), "rejected": assistant_turn(rejected), "chosen_label": "Refuse",
                     "rejected_label": "Accept", "chosen_score": 1.0, "rejected_score": 0.0})
    return pa.Table.from_pylist(rows, schema=PAIRS)


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
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)

    groups = {}
    for world in (1, 2):
        learner = cfg.learner.model_copy(update={"world_size": world})
        groups[world] = LearnerGroup(model_path, cfg.model.dtype, learner, cfg.seed, timeout_s=600)
    for group in groups.values():
        group.ready()
    kto = KTOWeights(1.0, 1.0)
    policy, first_loss = {}, {}
    for world, group in groups.items():
        (result, *_) = group.call("train", "dpo", pairs_table(prompts, 8, cfg.seed), 1, f"{out}/w{world}", BASE, kto)
        policy[world], first_loss[world] = result.policy, result.mean_loss
    loss_abs_diff = abs(first_loss[1] - first_loss[2])
    print(f"one step on the same 8 pairs: loss {first_loss[1]:.8f} (1 rank) vs {first_loss[2]:.8f} (2 ranks), "
          f"|diff| {loss_abs_diff:.2e}")

    data = pairs_table(prompts, args.pairs, cfg.seed + 1)
    rates: dict[int, list[float]] = {1: [], 2: []}
    for rep in range(args.reps):
        for world, group in groups.items():
            t0 = time.perf_counter()
            (result, *_) = group.call("train", "dpo", data, 2 + rep, f"{out}/w{world}", policy[world], kto)
            rates[world].append(args.pairs / (time.perf_counter() - t0))
            policy[world] = result.policy
    per_s = {world: statistics.median(r) for world, r in rates.items()}
    print(f"{args.pairs} DPO pairs, batch {cfg.learner.batch_size}, ZeRO stage {cfg.learner.zero_stage}, "
          f"median of {args.reps}:")
    for world, value in per_s.items():
        print(f"  {world} rank(s): {value:7.1f} pairs/s")
    for group in groups.values():
        group.shutdown()
    ray.shutdown()
    print(json.dumps({"samples_per_s_1": round(per_s[1], 2), "samples_per_s_2": round(per_s[2], 2),
                      "loss_abs_diff": loss_abs_diff, "two_over_one": round(per_s[2] / per_s[1], 3)}))


if __name__ == "__main__":
    main()
