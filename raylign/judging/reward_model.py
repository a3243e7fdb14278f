"""The reward-model judge: sequence-classification models, one per objective, score (prompt, answer).

A model with one logit scores its objective as sigmoid(logit), in [0, 1]. A model with several
labels (one at most) classifies: its argmax label is the judge's label, from which the safety
and helpfulness scores follow as for any judge. Its labels (config.id2label) are Accept,
Caution and Refuse, in any case, or `reward_model.label_map` maps them (a refusal classifier's
REJECTION / NORMAL, say), naming each of them and nothing else. The (prompt, answer) pair goes
through the model's chat template when its tokenizer has one; inputs longer than `max_length`
lose the start of the prompt, never the answer.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from raylign.config import RewardModelConfig
from raylign.data.schemas import assistant_turn, user_turn
from raylign.evaluation.scoring import ACCEPT, CAUTION, REFUSE
from raylign.judging.verdicts import Verdict

CARES_CLASSES = {ACCEPT.lower(): ACCEPT, CAUTION.lower(): CAUTION, REFUSE.lower(): REFUSE}


class RewardModelJudge:
    def __init__(self, cfg: RewardModelConfig, device: str = "cpu"):
        self.cfg, self.device = cfg, device
        self.models = {}
        for objective, path in cfg.models.items():
            tokenizer = AutoTokenizer.from_pretrained(path)
            tokenizer.truncation_side = "left"
            model = AutoModelForSequenceClassification.from_pretrained(path, dtype=getattr(torch, cfg.dtype))
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            model.config.pad_token_id = tokenizer.pad_token_id  # the models read the last real token
            self.models[objective] = (tokenizer, model.to(device).eval())
        classifiers = [o for o, (_, m) in self.models.items() if m.config.num_labels > 1]
        if len(classifiers) > 1:
            raise ValueError(f"reward_model: one classifier (a model with several labels) at most (got {classifiers})")
        if cfg.label_map and not classifiers:
            raise ValueError("reward_model.label_map maps a classifier's labels, but every model in reward_model.models "
                             "has one logit")
        self.classifier = classifiers[0] if classifiers else None
        self.own_labels, self.classes = self._classes() if classifiers else ([], [])
        self.version = "reward_model@" + ",".join(f"{o}={Path(p).name}" for o, p in cfg.models.items())

    @property
    def labels(self) -> bool:
        return self.classifier is not None

    def _classes(self) -> tuple[list[str], list[str]]:
        """The classifier's own label and its CARES label, by class index."""
        model, label_map = self.models[self.classifier][1], self.cfg.label_map
        own = [model.config.id2label[i] for i in range(model.config.num_labels)]
        if not label_map:
            if sorted(n.lower() for n in own) != sorted(CARES_CLASSES):
                raise ValueError(f"reward_model {self.classifier!r}: a scorer needs one logit, or Accept/Caution/Refuse "
                                 f"labels to classify, or reward_model.label_map from its labels ({', '.join(own)}) to "
                                 f"those (got {len(own)} labels)")
            return own, [CARES_CLASSES[n.lower()] for n in own]
        given = {k.lower(): v for k, v in label_map.items()}
        missing = [n for n in own if n.lower() not in given]
        unknown = [k for k in label_map if k.lower() not in {n.lower() for n in own}]
        if missing or unknown:
            problems = []
            if missing:
                problems.append(f"no label for {', '.join(missing)}")
            if unknown:
                problems.append(f"{', '.join(unknown)} is none of them")
            raise ValueError(f"reward_model.label_map {label_map} does not fit model {self.classifier!r} "
                             f"({self.cfg.models[self.classifier]}), whose labels are {', '.join(own)}: {'; '.join(problems)}")
        return own, [given[n.lower()] for n in own]

    @torch.no_grad()
    def label_all(self, rows: list[dict], policy=None) -> list[Verdict]:
        t0 = time.perf_counter()
        labels: list[str | None] = [None] * len(rows)
        said = [""] * len(rows)  # the classifier's verdict in its own words
        scores: list[dict[str, float]] = [{} for _ in rows]
        for objective, (tokenizer, model) in self.models.items():
            for start in range(0, len(rows), self.cfg.batch_size):
                logits = self._logits(tokenizer, model, rows[start:start + self.cfg.batch_size])
                for i, row_logits in enumerate(logits, start):
                    if objective == self.classifier:
                        k = int(row_logits.argmax())
                        labels[i] = self.classes[k]
                        said[i] = f"{objective}={labels[i]}" + f" ({self.own_labels[k]})" * bool(self.cfg.label_map)
                    else:
                        scores[i][objective] = float(torch.sigmoid(row_logits[0]))
        per_row = (time.perf_counter() - t0) / max(1, len(rows))
        return [
            Verdict(label, " ".join([x] * bool(x) + [f"{k}={v:.4f}" for k, v in s.items()]), s, per_row)
            for label, x, s in zip(labels, said, scores)
        ]

    def _logits(self, tokenizer, model, rows: list[dict]) -> torch.Tensor:
        if tokenizer.chat_template:
            texts = [tokenizer.apply_chat_template(user_turn(r["prompt"]) + assistant_turn(r["answer"]), tokenize=False)
                     for r in rows]
            inputs = tokenizer(texts, add_special_tokens=False, padding=True, truncation=True,
                               max_length=self.cfg.max_length, return_tensors="pt")
        else:
            inputs = tokenizer([r["prompt"] for r in rows], [r["answer"] for r in rows], padding=True,
                               truncation="only_first", max_length=self.cfg.max_length, return_tensors="pt")
        return model(**inputs.to(self.device)).logits.float()
