"""The reward-model judge: sequence-classification models, one per objective, score (prompt, answer).

A model with one logit scores its objective as sigmoid(logit), in [0, 1]. A model whose labels
(config.id2label) are Accept, Caution and Refuse is a CARES classifier: its argmax is the
judge's label, from which the safety and helpfulness scores follow as for any judge. The
(prompt, answer) pair goes through the model's chat template when its tokenizer has one;
inputs longer than `max_length` lose the start of the prompt, never the answer.
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
        classifiers = [o for o, (_, m) in self.models.items() if self._cares_classes(m) is not None]
        if len(classifiers) > 1:
            raise ValueError(f"reward_model: one CARES classifier at most (got {classifiers})")
        self.classifier = classifiers[0] if classifiers else None
        for objective, (_, model) in self.models.items():
            if objective != self.classifier and model.config.num_labels != 1:
                raise ValueError(f"reward_model {objective!r}: a scorer needs one logit, or Accept/Caution/Refuse "
                                 f"labels to classify (got {model.config.num_labels} labels)")
        self.version = "reward_model@" + ",".join(f"{o}={Path(p).name}" for o, p in cfg.models.items())

    @property
    def labels(self) -> bool:
        return self.classifier is not None

    @staticmethod
    def _cares_classes(model) -> list[str] | None:
        names = [model.config.id2label[i].lower() for i in range(model.config.num_labels)]
        return [CARES_CLASSES[n] for n in names] if sorted(names) == sorted(CARES_CLASSES) else None

    @torch.no_grad()
    def label_all(self, rows: list[dict], policy=None) -> list[Verdict]:
        t0 = time.perf_counter()
        labels: list[str | None] = [None] * len(rows)
        scores: list[dict[str, float]] = [{} for _ in rows]
        for objective, (tokenizer, model) in self.models.items():
            for start in range(0, len(rows), self.cfg.batch_size):
                logits = self._logits(tokenizer, model, rows[start:start + self.cfg.batch_size])
                for i, row_logits in enumerate(logits, start):
                    if objective == self.classifier:
                        labels[i] = self._cares_classes(model)[int(row_logits.argmax())]
                    else:
                        scores[i][objective] = float(torch.sigmoid(row_logits[0]))
        per_row = (time.perf_counter() - t0) / max(1, len(rows))
        return [
            Verdict(label, " ".join([f"{self.classifier}={label}"] * (label is not None)
                                    + [f"{k}={v:.4f}" for k, v in s.items()]), s, per_row)
            for label, s in zip(labels, scores)
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
