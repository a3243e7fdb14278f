"""How far the rules prompt classifier's harm levels agree with true ones.

    python bench/prompt_levels.py [--show-misses]

Sets: the bundled prompt set's train and test splits (raylign/data/cares_prompts.jsonl; test has
fillers train never uses and a held-out template per principle and level), and
bench/data/labelled_prompts.jsonl, prompts written the way users write (typos, lower case, several
turns), labelled by hand 0-3: its `tune` rows were used to write the patterns, its `heldout` rows
were written before the patterns and measured once they were frozen. Per set: agreement and Cohen's
kappa of the predicted level (however confident) and of the level given (below min_confidence it is
unknown, which counts as a disagreement), the confusion matrix (rows true, columns given) and how
many fell below min_confidence. The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from raylign.config import PromptClassifierConfig
from raylign.data.schemas import chat_of
from raylign.embedded.prompt_set import load_prompt_set
from raylign.evaluation.agreement import agreement
from raylign.judging.prompt_levels import make_prompt_classifier

DATA = Path(__file__).parent / "data" / "labelled_prompts.jsonl"
LEVELS = ("0", "1", "2", "3")


def sets() -> dict[str, list[dict]]:
    bundled = load_prompt_set()
    labelled = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]
    return {
        "bundled_train": [r for r in bundled if r["split"] == "train"],
        "bundled_test": [r for r in bundled if r["split"] == "test"],
        "realistic_tune": [r for r in labelled if r["split"] == "tune"],
        "realistic_heldout": [r for r in labelled if r["split"] == "heldout"],
    }


def measure(rows: list[dict], cfg: PromptClassifierConfig = PromptClassifierConfig()) -> dict:
    verdicts = make_prompt_classifier(cfg).classify([chat_of(r) for r in rows])
    truth = [str(r["harmful_level"]) for r in rows]
    predicted = agreement(truth, [str(v.predicted) for v in verdicts], LEVELS)
    given = agreement(truth, ["unknown" if v.level is None else str(v.level) for v in verdicts], LEVELS)
    return {"n": len(rows), "predicted_accuracy": predicted.observed, "predicted_kappa": predicted.kappa,
            "accuracy": given.observed, "kappa": given.kappa, "unknown": sum(v.level is None for v in verdicts),
            "confusion": given.confusion, "verdicts": verdicts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--show-misses", action="store_true", help="list every prompt given a wrong or no level")
    args = parser.parse_args()
    figures = {}
    for name, rows in sets().items():
        m = measure(rows)
        print(f"{name}: n={m['n']} level accuracy {m['accuracy']:.3f} kappa {m['kappa']:.3f} (predicted, however "
              f"confident: {m['predicted_accuracy']:.3f} / {m['predicted_kappa']:.3f}), below min_confidence "
              f"{m['unknown']}")
        for level in LEVELS:
            print(f"  true {level}: " + "  ".join(f"{g}:{m['confusion'][level][g]}" for g in LEVELS))
        if args.show_misses:
            for row, v in zip(rows, m["verdicts"]):
                if v.level != row["harmful_level"]:
                    print(f"    {row['harmful_level']} -> {v.level} ({v.predicted}, {v.confidence:.2f}, {v.reason}): "
                          f"{chat_of(row)[-1]['content']}")
        figures[name] = {k: v for k, v in m.items() if k != "verdicts"}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
