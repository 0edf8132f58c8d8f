"""DivideMix's MixMatch step as pure tensor functions (Li, Socher, Hoi, ICLR 2020, Section 3.3).

Label co-refinement (labelled part), co-guessing (unlabelled part), sharpening, mixup with
lambda' = max(lambda, 1 - lambda), the semi-supervised loss with its linear ramp-up, the
uniform-prior regulariser and the warm-up's confidence penalty. ``dividemix.py`` wires them.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["sharpen", "co_refine", "co_guess", "mix_lambda", "mixup", "semi_loss", "linear_rampup",
           "prior_penalty", "confidence_penalty", "mixmatch_losses", "RAMPUP_EPOCHS"]

#: the authors' ramp-up length of lambda_u, in epochs after the warm-up
RAMPUP_EPOCHS = 16


def sharpen(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """p^(1/T), renormalised per row (Eq. 7 of MixMatch)."""
    sharp = probs ** (1.0 / temperature)
    return sharp / sharp.sum(dim=1, keepdim=True)


def co_refine(labels: torch.Tensor, weights: torch.Tensor, view_probs: Sequence[torch.Tensor],
              temperature: float) -> torch.Tensor:
    """Labelled targets: sharpen(w * onehot(y) + (1 - w) * mean of the network's own softmax over
    the augmented views), w = the peer's clean probability of each sample (Eq. 3-4)."""
    onehot = F.one_hot(labels, view_probs[0].shape[1]).to(view_probs[0].dtype)
    w = weights.to(view_probs[0].dtype).view(-1, 1)
    mean = torch.stack(list(view_probs)).mean(dim=0)
    return sharpen(w * onehot + (1.0 - w) * mean, temperature)


def co_guess(view_probs: Sequence[torch.Tensor], temperature: float) -> torch.Tensor:
    """Unlabelled targets: sharpen(mean softmax of both networks over all augmented views)."""
    return sharpen(torch.stack(list(view_probs)).mean(dim=0), temperature)


def mix_lambda(alpha: float, rng: np.random.Generator) -> float:
    """lambda ~ Beta(alpha, alpha), then max(lambda, 1 - lambda) so the mix stays closer to the
    first input (its own sample); alpha <= 0 turns mixup off (lambda = 1)."""
    if alpha <= 0:
        return 1.0
    lam = float(rng.beta(alpha, alpha))
    return max(lam, 1.0 - lam)


def mixup(inputs: torch.Tensor, targets: torch.Tensor, lam: float,
          perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """lam * (x, p) + (1 - lam) * (x, p)[perm] over the whole labelled + unlabelled batch."""
    return lam * inputs + (1.0 - lam) * inputs[perm], lam * targets + (1.0 - lam) * targets[perm]


def semi_loss(logits_x: torch.Tensor, targets_x: torch.Tensor, logits_u: torch.Tensor,
              targets_u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_x, L_u): cross-entropy with the mixed soft targets on the labelled part, mean squared
    error of the softmax on the unlabelled part (mean over samples *and* classes, as the authors).
    An empty unlabelled part gives L_u = 0."""
    lx = -(F.log_softmax(logits_x.float(), dim=1) * targets_x).sum(dim=1).mean()
    if logits_u.shape[0] == 0:
        return lx, logits_u.float().sum() * 0.0
    lu = ((logits_u.float().softmax(dim=1) - targets_u) ** 2).mean()
    return lx, lu


def linear_rampup(progress: float, warmup_epochs: int, lambda_u: float,
                  length: int = RAMPUP_EPOCHS) -> float:
    """The authors' weight of L_u: lambda_u * clip((epoch + step/steps - warm-up) / 16, 0, 1),
    ``progress`` the fractional (0-based) epoch."""
    return lambda_u * float(np.clip((progress - warmup_epochs) / length, 0.0, 1.0))


def prior_penalty(logits: torch.Tensor) -> torch.Tensor:
    """KL(uniform || mean softmax of the mixed batch): keeps every class predicted (Eq. 11)."""
    mean = logits.float().softmax(dim=1).mean(dim=0)
    prior = torch.full_like(mean, 1.0 / mean.numel())
    return (prior * (prior.log() - mean.log())).sum()


def confidence_penalty(logits: torch.Tensor) -> torch.Tensor:
    """Negative entropy, mean over the batch: added to the warm-up cross-entropy under asymmetric
    noise so the networks do not become over-confident before the first division (Section 3.1)."""
    log_p = F.log_softmax(logits.float(), dim=1)
    return (log_p.exp() * log_p).sum(dim=1).mean()


def mixmatch_losses(net: Callable[[torch.Tensor], torch.Tensor], peer: Callable[[torch.Tensor], torch.Tensor],
                    x: Sequence[torch.Tensor], labels: torch.Tensor, weights: torch.Tensor,
                    u: Sequence[torch.Tensor], *, temperature: float, lam: float,
                    perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One DivideMix step of ``net``: (L_x, L_u, prior penalty); the caller weighs L_u.

    ``x``: the labelled batch's augmented views, ``u``: the unlabelled batch's; ``perm`` permutes
    the concatenation [x views, u views] for mixup. Targets come without gradient: co-refinement
    from ``net`` alone, co-guessing from ``net`` and ``peer`` (the peer stays as the caller set it,
    eval mode in the authors' code). ``net`` sees each view separately, as the authors do, so a
    batch-norm network normalises the same batches. ``u`` may be empty (every sample labelled).
    """
    with torch.no_grad():
        refined = co_refine(labels, weights, [net(view).float().softmax(dim=1) for view in x], temperature)
        guessed = [co_guess([z.float().softmax(dim=1) for view in u for z in (net(view), peer(view))],
                            temperature)] * len(u) if u else []
    inputs = torch.cat([*x, *u])
    targets = torch.cat([refined] * len(x) + guessed)
    mixed_inputs, mixed_targets = mixup(inputs, targets, lam, perm)
    logits = net(mixed_inputs)
    n_x = sum(view.shape[0] for view in x)
    lx, lu = semi_loss(logits[:n_x], mixed_targets[:n_x], logits[n_x:], mixed_targets[n_x:])
    return lx, lu, prior_penalty(logits)
