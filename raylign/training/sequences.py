"""Tokenised (prompt, completion) sequences and their log-probabilities under a model.

The prompt is rendered with the tokenizer's chat template (`add_generation_prompt=True`), the
completion is the answer's tokens plus EOS, as generation produces them. Only completion
tokens count towards log-probabilities.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from transformers import PreTrainedTokenizerBase
from trl.trainer.utils import selective_log_softmax


def device_for(num_gpus: float) -> torch.device:
    """CUDA when the role was given a GPU and one is visible; otherwise CPU."""
    return torch.device("cuda" if num_gpus > 0 and torch.cuda.is_available() else "cpu")


class Encoded(NamedTuple):
    input_ids: list[int]
    completion_start: int


def encode(tokenizer: PreTrainedTokenizerBase, prompt: list[dict], completion: str, max_length: int) -> Encoded:
    prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False)
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    # Keep the whole prompt and cut the completion's end: the judged style is decided early.
    room = max(1, max_length - len(prompt_ids))
    return Encoded(list(prompt_ids) + completion_ids[:room], len(prompt_ids))


class Batch(NamedTuple):
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    completion_mask: torch.Tensor  # 1 on completion tokens, aligned with input_ids


def collate(encoded: Sequence[Encoded], pad_id: int) -> Batch:
    width = max(len(e.input_ids) for e in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    completion = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, e in enumerate(encoded):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        attention[row, :n] = 1
        completion[row, e.completion_start : n] = 1
    return Batch(ids, attention, completion)


class SequenceLogps(NamedTuple):
    logps: torch.Tensor  # summed over completion tokens, one per sequence
    num_tokens: torch.Tensor


def sequence_logps(model: torch.nn.Module, batch: Batch) -> SequenceLogps:
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    targets = batch.input_ids[:, 1:]
    mask = batch.completion_mask[:, 1:].to(logits.dtype)
    token_logps = selective_log_softmax(logits, targets)
    return SequenceLogps((token_logps * mask).sum(-1), mask.sum(-1))
