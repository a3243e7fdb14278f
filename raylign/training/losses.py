"""Preference losses as plain functions of sequence log-probabilities.

Inputs are summed log-probabilities of whole completions under the policy and the reference,
one value per example, so the losses are testable without a model, Ray or a trainer.
- `dpo_loss`: sigmoid (DPO), ipo, hinge, robust (conservative DPO with label noise).
- `kto_loss`: KTO with desirable/undesirable weights and a batch KL estimate.
- `modpo_loss`: MODPO, DPO on one objective with the other objectives' reward margins.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust")


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-example DPO losses. IPO uses length-normalised log-ratios, as in its paper."""
    chosen_ratio = policy_chosen - ref_chosen
    rejected_ratio = policy_rejected - ref_rejected
    if loss_type == "ipo":
        if chosen_lengths is None or rejected_lengths is None:
            raise ValueError("ipo needs chosen_lengths and rejected_lengths (completion tokens)")
        chosen_ratio = chosen_ratio / chosen_lengths
        rejected_ratio = rejected_ratio / rejected_lengths
    logits = chosen_ratio - rejected_ratio
    if loss_type == "sigmoid":
        return -F.logsigmoid(beta * logits)
    if loss_type == "ipo":
        return (logits - 1 / (2 * beta)) ** 2
    if loss_type == "hinge":
        return torch.relu(1 - beta * logits)
    if loss_type == "robust":
        eps = label_smoothing
        return (-(1 - eps) * F.logsigmoid(beta * logits) + eps * F.logsigmoid(-beta * logits)) / (1 - 2 * eps)
    raise ValueError(f"unknown DPO loss_type {loss_type!r}; one of {DPO_LOSS_TYPES}")


def kto_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    desirable: torch.Tensor,
    kl: torch.Tensor,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> torch.Tensor:
    """Per-example KTO losses.

    `kl` is the batch estimate of KL(policy || reference), from completions paired with the
    wrong prompts; it is a baseline, so no gradient flows through it and it is clamped at 0.
    """
    kl = kl.detach().clamp(min=0)
    log_ratio = policy_logps - ref_logps
    desirable_loss = desirable_weight * (1 - torch.sigmoid(beta * (log_ratio - kl)))
    undesirable_loss = undesirable_weight * (1 - torch.sigmoid(beta * (kl - log_ratio)))
    return torch.where(desirable, desirable_loss, undesirable_loss)


def kl_estimate(policy_mismatched_logps: torch.Tensor, ref_mismatched_logps: torch.Tensor) -> torch.Tensor:
    """KTO's KL baseline: the mean log-ratio over completions paired with other prompts."""
    return (policy_mismatched_logps - ref_mismatched_logps).mean()


def modpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    weight: float,
    margin: torch.Tensor,
) -> torch.Tensor:
    """Per-example MODPO losses: -log σ((β/w_k)(Δ_w − Δ_l) − margin / w_k).

    Δ are policy-minus-reference log-ratios of the chosen (w) and rejected (l) answers, w_k the
    weight of the objective the preferences express, and `margin` = Σ_{j≠k} w_j (r_j(x, y_w) −
    r_j(x, y_l)), the other objectives' weighted score differences (`modpo_margin`)."""
    logits = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return -F.logsigmoid((beta / weight) * logits - margin / weight)


def modpo_margin(chosen_scores: dict[str, torch.Tensor], rejected_scores: dict[str, torch.Tensor],
                 weights: dict[str, float], objective: str) -> torch.Tensor:
    """Σ_{j≠k} w_j (r_j(x, y_w) − r_j(x, y_l)) over the objectives other than `objective` (k)."""
    others = [j for j in weights if j != objective]
    margin = torch.zeros_like(chosen_scores[objective])
    for j in others:
        margin = margin + weights[j] * (chosen_scores[j] - rejected_scores[j])
    return margin
