"""Our preference losses against TRL's trainers, on the same fixed batch of tokens.

TRL's DPOTrainer (KTOTrainer) tokenizes and collates the pairs (examples) and computes its loss; we take the very same
batch, compute sequence log-probabilities with `raylign.training.sequences` and the loss with
`raylign.training.losses`, and the two agree to 1e-5. The policy is the embedded model with its weights
nudged, the reference the model as built, so the loss is not trivially log 2.
"""

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

from raylign.training.losses import dpo_loss, kl_estimate, kto_loss
from raylign.training.sequences import Batch, sequence_logps

REFUSE = "I cannot help with this request. It could cause real harm, so I have to say no."
CAUTION = "Please check with a healthcare provider first; the right choice depends on your health."
ACCEPT = "Sure. Here is the short answer: it usually takes a few simple steps, and most people manage."


@pytest.fixture(scope="module")
def models(model_path, perturbed_model):
    policy = perturbed_model(0.05, seed=0)
    reference = AutoModelForCausalLM.from_pretrained(model_path).eval()
    return policy, reference, AutoTokenizer.from_pretrained(model_path)


def pairs() -> Dataset:
    answers = [(REFUSE, ACCEPT), (ACCEPT, REFUSE), (CAUTION, ACCEPT), (REFUSE, CAUTION)]
    return Dataset.from_list([
        {"prompt": [{"role": "user", "content": f"How much of medicine {i} can I take at once?"}],
         "chosen": [{"role": "assistant", "content": answers[i % 4][0]}],
         "rejected": [{"role": "assistant", "content": answers[i % 4][1]}]}
        for i in range(8)
    ])


def trl_loss_and_batch(models, tmp_path, loss_type: list[str], loss_weights: list[float] | None = None):
    policy, reference, tokenizer = models
    args = DPOConfig(output_dir=str(tmp_path), beta=0.3, loss_type=loss_type, loss_weights=loss_weights,
                     per_device_train_batch_size=8, use_cpu=True, bf16=False, report_to=[])
    trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=pairs(), processing_class=tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
    return float(loss), Batch(batch["input_ids"], batch["attention_mask"], batch["completion_mask"])


def our_logps(models, batch: Batch):
    policy, reference, _ = models
    with torch.no_grad():
        mine, ref = sequence_logps(policy, batch), sequence_logps(reference, batch)
    n = batch.input_ids.shape[0] // 2  # TRL stacks [chosen; rejected]
    return mine, ref, n


@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge", "ipo"])
def test_dpo_loss_equals_trls(models, tmp_path, loss_type):
    expected, batch = trl_loss_and_batch(models, tmp_path, [loss_type])
    mine, ref, n = our_logps(models, batch)
    ours = dpo_loss(mine.logps[:n], mine.logps[n:], ref.logps[:n], ref.logps[n:], beta=0.3, loss_type=loss_type,
                    chosen_lengths=mine.num_tokens[:n], rejected_lengths=mine.num_tokens[n:]).mean()
    assert abs(float(ours) - expected) < 1e-5
    assert abs(expected - 0.6931) > 1e-3 or loss_type != "sigmoid"  # not the trivial log 2


def test_dpo_with_the_sft_term_equals_trls_sigmoid_plus_sft(models, tmp_path):
    expected, batch = trl_loss_and_batch(models, tmp_path, ["sigmoid", "sft"], [1.0, 0.5])
    mine, ref, n = our_logps(models, batch)
    pref = dpo_loss(mine.logps[:n], mine.logps[n:], ref.logps[:n], ref.logps[n:], beta=0.3).mean()
    sft = -(mine.logps[:n].sum() / mine.num_tokens[:n].sum())  # mean token NLL of the chosen answers
    assert abs(float(pref + 0.5 * sft) - expected) < 1e-5


def test_kto_loss_equals_trls_with_its_kl_baseline_and_class_weights(models, tmp_path):
    policy, reference, tokenizer = models
    answers = [REFUSE, ACCEPT, CAUTION]
    examples = Dataset.from_list([
        {"prompt": [{"role": "user", "content": f"Can I mix medicine {i} with alcohol?"}],
         "completion": [{"role": "assistant", "content": answers[i % 3]}], "label": i % 3 != 1}
        for i in range(8)
    ])
    args = KTOConfig(output_dir=str(tmp_path), beta=0.3, desirable_weight=1.0, undesirable_weight=1.25,
                     per_device_train_batch_size=8, use_cpu=True, bf16=False, report_to=[])
    trainer = KTOTrainer(model=policy, ref_model=reference, args=args, train_dataset=examples, processing_class=tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    with torch.no_grad():
        expected = float(trainer.compute_loss(trainer.model, batch))
        matched = Batch(batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
        shifted = Batch(batch["KL_input_ids"], batch["KL_attention_mask"], batch["KL_completion_mask"])
        kl = kl_estimate(sequence_logps(policy, shifted).logps, sequence_logps(reference, shifted).logps)
        ours = kto_loss(sequence_logps(policy, matched).logps, sequence_logps(reference, matched).logps,
                        batch["label"].bool(), kl, beta=0.3, desirable_weight=1.0, undesirable_weight=1.25).mean()
    assert abs(float(ours) - expected) < 1e-5
    assert float(kl) != 0
