"""Per-epoch schedules: the forget rate tau_t, and the lr (and Adam's beta1) of the paper's plan or of
timm's scheduler factory (cosine, tanh, poly, with warm-up).

Both are pure functions of the epoch, so resuming at an epoch boundary restores them exactly.
Epochs are 0-based and every epoch trains.
"""
from __future__ import annotations

import torch

from ..config import MethodConfig, OptimConfig
from ..config.recipe import TIMM_SCHEDULES

__all__ = ["forget_rate_at", "lr_beta1_at", "timm_lr_at", "apply_optim_schedule"]


def forget_rate_at(epoch: int, tau: float, cfg: MethodConfig) -> float:
    """'paper': tau * min((t / T_k)^c, 1) -- 0 in the first epoch, tau from epoch T_k on.
    'official': the authors' linspace(0, tau^c, T_k) indexed by their epoch counter, which starts
    training at 1 (they only evaluate at 0), so tau is reached T_k - 1 epochs in."""
    t_k = cfg.num_gradual
    if cfg.forget_schedule == "official":
        if t_k == 1:
            return tau ** cfg.exponent
        return (tau ** cfg.exponent) * min((epoch + 1) / (t_k - 1), 1.0) if epoch + 1 < t_k else tau
    return tau * min((epoch / t_k) ** cfg.exponent, 1.0)


def lr_beta1_at(epoch: int, epochs: int, cfg: OptimConfig) -> tuple[float, float]:
    """'paper': lr decays linearly, lr * (N - t) / (N - decay_start), and beta1 steps to
    ``beta1_decayed`` from ``decay_start`` (as the authors' alpha_plan / beta1_plan).
    'piecewise': lr_steps[t // step_epochs] (last value held). 'constant': as given.
    'cosine', 'tanh', 'poly': timm's scheduler at epoch t (beta1 as given)."""
    beta1 = cfg.betas[0]
    if cfg.schedule in TIMM_SCHEDULES:
        return timm_lr_at(epoch, epochs, cfg), beta1
    if cfg.schedule == "paper" and epoch >= cfg.decay_start:
        return cfg.lr * (epochs - epoch) / max(epochs - cfg.decay_start, 1), cfg.beta1_decayed
    if cfg.schedule == "piecewise":
        return cfg.lr_steps[min(epoch // cfg.step_epochs, len(cfg.lr_steps) - 1)], beta1
    return cfg.lr, beta1


def timm_lr_at(epoch: int, epochs: int, cfg: OptimConfig) -> float:
    """The lr timm's ``create_scheduler_v2`` gives epoch ``epoch`` (per-epoch stepping, as timm's
    train.py by default), read from a throw-away optimizer so it stays a pure function of the epoch."""
    from timm.scheduler import create_scheduler_v2

    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
    scheduler, _ = create_scheduler_v2(probe, sched=cfg.schedule, num_epochs=epochs, min_lr=cfg.min_lr,
                                       warmup_lr=cfg.warmup_lr, warmup_epochs=cfg.warmup_epochs)
    scheduler.step(epoch)
    return float(probe.param_groups[0]["lr"])


def apply_optim_schedule(optimizer: torch.optim.Optimizer, epoch: int, epochs: int,
                         cfg: OptimConfig) -> float:
    """Set this epoch's lr (and beta1, for optimizers that have betas); return the lr."""
    lr, beta1 = lr_beta1_at(epoch, epochs, cfg)
    for group in optimizer.param_groups:
        group["lr"] = lr
        if "betas" in group:
            group["betas"] = (beta1, group["betas"][1])
    return lr
