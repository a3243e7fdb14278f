import math

import torch

from raylign.training.losses import dpo_loss, kl_estimate, kto_loss, modpo_loss, modpo_margin

PC, PR = torch.tensor([-10.0, -12.0]), torch.tensor([-11.0, -9.0])
RC, RR = torch.tensor([-10.5, -11.0]), torch.tensor([-10.5, -10.0])


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_dpo_sigmoid_matches_formula():
    beta = 0.1
    got = dpo_loss(PC, PR, RC, RR, beta)
    for i in range(2):
        logits = (PC[i] - RC[i]) - (PR[i] - RR[i])
        assert got[i].item() == torch.tensor(-math.log(sigmoid(beta * logits.item()))).item()


def test_dpo_variants():
    beta = 0.5
    logits = (PC - RC) - (PR - RR)
    assert torch.allclose(dpo_loss(PC, PR, RC, RR, beta, "hinge"), torch.relu(1 - beta * logits))
    robust = dpo_loss(PC, PR, RC, RR, beta, "robust", label_smoothing=0.1)
    manual = (-0.9 * torch.nn.functional.logsigmoid(beta * logits)
              + 0.1 * torch.nn.functional.logsigmoid(-beta * logits)) / 0.8
    assert torch.allclose(robust, manual)
    lengths = torch.tensor([4.0, 5.0])
    ipo = dpo_loss(PC, PR, RC, RR, beta, "ipo", chosen_lengths=lengths, rejected_lengths=lengths)
    norm = (PC - RC) / lengths - (PR - RR) / lengths
    assert torch.allclose(ipo, (norm - 1 / (2 * beta)) ** 2)


def test_dpo_loss_falls_as_policy_prefers_chosen():
    worse = dpo_loss(torch.tensor([-12.0]), torch.tensor([-9.0]), torch.tensor([-10.0]), torch.tensor([-10.0]), 0.1)
    better = dpo_loss(torch.tensor([-8.0]), torch.tensor([-13.0]), torch.tensor([-10.0]), torch.tensor([-10.0]), 0.1)
    assert better.item() < math.log(2) < worse.item()


def test_kto_matches_formula_and_weights():
    policy, ref = torch.tensor([-5.0, -6.0]), torch.tensor([-5.5, -5.0])
    desirable = torch.tensor([True, False])
    kl = kl_estimate(torch.tensor([-20.0, -21.0]), torch.tensor([-20.5, -21.5]))
    assert kl.item() == 0.5
    got = kto_loss(policy, ref, desirable, kl, beta=0.2, desirable_weight=1.5, undesirable_weight=1.0)
    assert got[0].item() == torch.tensor(1.5 * (1 - sigmoid(0.2 * (0.5 - 0.5)))).item()
    assert abs(got[1].item() - (1 - sigmoid(0.2 * (0.5 - (-1.0))))) < 1e-7


def test_kto_kl_is_a_clamped_baseline_without_gradient():
    kl = torch.tensor(-3.0, requires_grad=True)
    policy = torch.tensor([-5.0], requires_grad=True)
    loss = kto_loss(policy, torch.tensor([-5.0]), torch.tensor([True]), kl, beta=0.1)
    loss.sum().backward()
    assert kl.grad is None and policy.grad is not None
    assert loss.item() == 0.5  # kl clamped to 0, log ratio 0


def test_modpo_is_its_formula_evaluated_directly():
    beta, weights = 0.3, {"safety": 0.6, "helpfulness": 0.3, "brevity": 0.1}
    chosen = {"safety": torch.tensor([1.0, 0.5]), "helpfulness": torch.tensor([0.0, 1.0]), "brevity": torch.tensor([0.2, 0.9])}
    rejected = {"safety": torch.tensor([0.0, 0.0]), "helpfulness": torch.tensor([1.0, 0.5]), "brevity": torch.tensor([0.4, 0.1])}
    margin = modpo_margin(chosen, rejected, weights, objective="safety")
    got = modpo_loss(PC, PR, RC, RR, beta, weights["safety"], margin)
    for i in range(2):
        delta = (PC[i] - RC[i]).item() - (PR[i] - RR[i]).item()
        m = 0.3 * (chosen["helpfulness"][i] - rejected["helpfulness"][i]).item() \
            + 0.1 * (chosen["brevity"][i] - rejected["brevity"][i]).item()
        expected = -math.log(sigmoid((beta / 0.6) * delta - m / 0.6))
        assert abs(got[i].item() - expected) < 1e-6


def test_modpo_with_no_other_objective_is_dpo_with_beta_over_weight():
    only = {"safety": torch.tensor([1.0, 0.0])}
    margin = modpo_margin(only, {"safety": torch.tensor([0.0, 0.0])}, {"safety": 1.0}, "safety")
    assert torch.equal(margin, torch.zeros(2))
    assert torch.allclose(modpo_loss(PC, PR, RC, RR, 0.2, 1.0, margin), dpo_loss(PC, PR, RC, RR, 0.2))
