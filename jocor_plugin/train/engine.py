"""One training step, one epoch of training and one evaluation pass. The wiring lives in ``trainer.py``.

The step never synchronises with the host: losses, selections and the non-finite-loss check
accumulate on the device and are read once per ``log_interval`` steps and at the end of the
epoch. Everything accumulated lives in an ``EpochMeter`` so an epoch interrupted part-way can be
checkpointed and continued exactly.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.optimizer import AcceleratedOptimizer
from tqdm.auto import tqdm

from ..core.errors import UserError
from ..methods import Method, MethodOutput
from ..models.pair import PairNet
from .meters import SampleStats

__all__ = ["EpochMeter", "train_step", "train_one_epoch", "evaluate", "stop_requested", "check_finite",
           "NonFiniteLossError"]


class NonFiniteLossError(UserError):
    """The training loss became NaN or infinite."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


class EpochMeter:
    """What one epoch accumulates, on the device: each step's loss, and per-sample masks over the
    training set (seen, noisy label, selected by each network).

    The step writes one loss slot and a few index assignments (no reductions); the running
    figures are derived at the logging interval and at the end of the epoch."""

    def __init__(self, num_samples: int, device: torch.device | str):
        self.num_samples, self.device = num_samples, device
        self._capacity = 64  # loss slots; doubled on the host when an epoch has more steps
        self.reset()

    def reset(self) -> None:
        """Start a new epoch (the buffers are allocated once per epoch, off the step's path)."""
        num_samples, device = self.num_samples, self.device
        self.steps = 0  # host counter: steps finished this epoch
        self.losses = torch.zeros(self._capacity, device=device)
        # the loss sum and non-finite count carried over from a checkpoint of the older format
        self.carry = (0.0, 0, -1)
        self.seen = torch.zeros(num_samples, dtype=torch.bool, device=device)
        self.noisy = torch.zeros(num_samples, dtype=torch.bool, device=device)
        self.selected = torch.zeros(2, num_samples, dtype=torch.bool, device=device)
        self.has_clean_labels = False

    def update(self, batch: dict[str, torch.Tensor], loss: torch.Tensor, selected_a: torch.Tensor,
               selected_b: Optional[torch.Tensor]) -> None:
        if self.steps == self._capacity:
            self._capacity *= 2
            self.losses = torch.cat([self.losses, torch.zeros_like(self.losses)])
        self.losses[self.steps] = loss
        index = batch["index"]
        # index_fill_ / index_copy_: the values of t[index] = v (a batch's indices are unique), in
        # about half its time on the CPU
        self.seen.index_fill_(0, index, True)
        if "is_noisy" in batch:
            self.noisy.index_copy_(0, index, batch["is_noisy"])
            self.has_clean_labels = True
        # a selection is unique batch positions, so one as long as the batch is all of it (known
        # on the host: no indexing by it, the common case of one-network methods)
        if selected_b is selected_a:  # one selection for both networks (JoCoR)
            self.selected.index_fill_(1, _selected_samples(index, selected_a), True)
        else:
            self.selected[0].index_fill_(0, _selected_samples(index, selected_a), True)
            if selected_b is not None:
                self.selected[1].index_fill_(0, _selected_samples(index, selected_b), True)
        self.steps += 1

    def nonfinite_steps(self) -> torch.Tensor:
        """Steps of this epoch whose loss was NaN/inf (on the device)."""
        return (~torch.isfinite(self.losses[:self.steps])).sum() + self.carry[1]

    def first_nonfinite(self) -> int:
        """The first non-finite step of this epoch (a host read), -1 if none."""
        if self.carry[2] >= 0:
            return self.carry[2]
        bad = ~torch.isfinite(self.losses[:self.steps])
        return int(bad.to(torch.uint8).argmax()) if bool(bad.any()) else -1

    def loss_sum(self) -> torch.Tensor:
        """Sum of the finite losses (a host read), added in step order in float32: the same value,
        bit for bit, as a running float32 sum kept on the device."""
        losses = self.losses[:self.steps].float().cpu().numpy()
        losses = np.concatenate([np.float32([self.carry[0]]), np.where(np.isfinite(losses), losses, 0)])
        return torch.tensor(np.cumsum(losses, dtype=np.float32)[-1], device=self.losses.device)

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {"steps": torch.tensor(self.steps), "losses": self.losses[:self.steps].clone(),
                 "seen": self.seen, "noisy": self.noisy, "selected": self.selected,
                 "has_clean_labels": torch.tensor(self.has_clean_labels)}
        if self.carry != (0.0, 0, -1):
            state.update(carry_loss_sum=torch.tensor(self.carry[0]), carry_nonfinite=torch.tensor(self.carry[1:]))
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.steps, self.has_clean_labels = int(state["steps"]), bool(state["has_clean_labels"])
        while self._capacity < self.steps:
            self._capacity *= 2
        self.losses = torch.zeros(self._capacity, device=self.device)
        self.seen.copy_(state["seen"])
        self.selected.copy_(state["selected"])
        if "loss_sum" in state:  # a checkpoint written before the per-step losses: its running sums
            self.noisy.copy_(state["seen"] & ~state["clean"])
            self.carry = (float(state["loss_sum"]), int(state["nonfinite_steps"]), int(state["first_nonfinite"]))
            return
        self.losses[:self.steps] = state["losses"]
        self.noisy.copy_(state["noisy"])
        if "carry_loss_sum" in state:
            nonfinite, first = state["carry_nonfinite"].tolist()
            self.carry = (float(state["carry_loss_sum"]), nonfinite, first)

    def summarise(self, accelerator: Accelerator, num_networks: int) -> dict[str, float]:
        """Combine the processes (each sample is seen on exactly one) into the epoch's figures:
        mean loss, label precision and selected fraction per network and for the pair. The counts
        are taken on the device and read once; the ratios are those of ``metrics/`` (``evaluate``
        modules, which the tests hold these to) without their per-call set-up."""
        out = {"train_loss": accelerator.reduce(self.loss_sum(), reduction="mean").item() / max(self.steps, 1)}
        masks = torch.cat([self.seen[None], self.noisy[None], self.selected[:num_networks]]).to(torch.uint8)
        masks = accelerator.reduce(masks, reduction="sum").bool()
        seen, clean, selected = masks[0], ~masks[1], masks[2:]
        chosen = selected & seen
        counts = torch.stack([seen.sum(), accelerator.reduce(self.nonfinite_steps(), reduction="sum"),
                              *chosen.sum(1), *(chosen & clean).sum(1)]).tolist()  # the one host read
        num_seen, out["nonfinite_steps"] = counts[:2]
        num_selected, num_clean = counts[2:2 + num_networks], counts[2 + num_networks:]
        out["selected_fraction"] = sum(num_selected) / (num_networks * num_seen) if num_seen else float("nan")
        if not self.has_clean_labels:
            return out
        for name, n, n_clean in zip("ab", num_selected, num_clean):
            out[f"label_precision_{name}"] = n_clean / n if n else float("nan")
        total = sum(num_selected)
        out["label_precision"] = sum(num_clean) / total if total else float("nan")
        return out


def _selected_samples(index: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """The training-set indices of a step's selection (unique batch positions)."""
    return index if selected.numel() == index.numel() else index[selected]


def check_finite(meter: EpochMeter, accelerator: Accelerator, epoch: int, nan_policy: str) -> None:
    """At the logging interval (and at the end of an epoch a method runs itself): stop on a
    non-finite loss, unless the policy is to skip it."""
    bad = accelerator.reduce(meter.nonfinite_steps(), reduction="sum").item()
    if bad and nan_policy == "stop":
        step = meter.first_nonfinite()
        raise NonFiniteLossError(
            f"The training loss became NaN/inf at step {step + 1} of epoch {epoch + 1}. Lower optim.lr, "
            f"check the inputs for NaN/inf, use full precision, or set train.nan_policy=skip.", step)


class SkipNonFiniteStep:
    """``nan_policy=skip``: a step whose gradients are not all finite leaves the weights and the
    optimizer's state as they were, without reading the verdict on the host.

    Zeroing the gradients alone is not enough: ``optimizer.step()`` still applies weight decay and
    the momentum (or Adam's moments) of earlier steps. So the step runs on finite gradients and
    every tensor it may change (weights, optimizer state) is then put back with ``torch.where`` on
    the device's own all-finite flag. The price, paid only under this policy: a copy of the weights
    and the optimizer state per step. Where the optimizer keeps a scalar on the CPU while the
    weights are on a GPU (Adam's step count), moving the flag there is one host sync per step, as
    PyTorch's own GradScaler makes. A first step that is skipped still creates the optimizer's
    state (zero moments, a step count of 1)."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer):
        self.params = list(model.parameters())
        self.optimizer = optimizer

    def _tensors(self) -> list[torch.Tensor]:
        state = self.optimizer.state
        return self.params + [v for p in self.params for v in state.get(p, {}).values() if torch.is_tensor(v)]

    @contextlib.contextmanager
    def step(self, update: bool) -> Iterator[None]:
        """Around ``optimizer.step()``; ``update``: this batch ends a gradient accumulation (the
        optimizer steps), so what it changes is guarded too."""
        grads = [p.grad for p in self.params if p.grad is not None]
        if not grads:
            yield
            return
        finite = torch.stack([torch.isfinite(g).all() for g in grads]).all()
        torch._foreach_mul_(grads, finite.to(grads[0].dtype))  # NaN * 0 is NaN: then nan_to_num
        for g in grads:
            torch.nan_to_num_(g, nan=0.0, posinf=0.0, neginf=0.0)
        if not update:
            yield
            return
        tensors = self._tensors()
        before = [t.detach().clone() for t in tensors]
        yield
        flags: dict[torch.device, torch.Tensor] = {}
        with torch.no_grad():
            for t, old in zip(tensors, before):
                flag = flags.setdefault(t.device, finite.to(t.device))
                t.copy_(torch.where(flag, t, old))


def zero_grad(optimizer: torch.optim.Optimizer, accelerator: Accelerator) -> None:
    """``optimizer.zero_grad(set_to_none=True)`` as Accelerate's ``AcceleratedOptimizer`` does it
    (only when this batch ends a gradient accumulation), without the ``inspect.signature`` of the
    wrapped optimizer's ``zero_grad`` that it takes on every call. Other wrappers (DeepSpeed's)
    keep their own."""
    if type(optimizer) is not AcceleratedOptimizer:
        optimizer.zero_grad(set_to_none=True)
    elif accelerator.sync_gradients:
        optimizer.optimizer.zero_grad(set_to_none=True)


def train_step(pair: PairNet, method: Method, batch: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
               accelerator: Accelerator, *, epoch: int, forget_rate: float, wants_index: bool = False,
               skip: Optional[SkipNonFiniteStep] = None, clip_grad: Optional[float] = None,
               clip_mode: str = "norm") -> tuple[MethodOutput, torch.Tensor, Optional[torch.Tensor]]:
    """One optimisation step of the pair on ``batch`` (under ``accelerator.accumulate``: the prepared
    optimizer steps only on the last batch of N). Returns the method's output and both logits."""
    with accelerator.accumulate(pair):
        logits_a, logits_b = pair(batch["pixel_values"])
        extra = {"index": batch["index"]} if wants_index else {}
        out = method(logits_a, logits_b, batch["label"], forget_rate=forget_rate, epoch=epoch, **extra)
        accelerator.backward(out.loss)
        with (skip.step(accelerator.sync_gradients) if skip else contextlib.nullcontext()):
            if clip_grad is not None and accelerator.sync_gradients:
                if clip_mode == "value":
                    accelerator.clip_grad_value_(pair.parameters(), clip_grad)
                else:
                    accelerator.clip_grad_norm_(pair.parameters(), clip_grad)
            optimizer.step()
        zero_grad(optimizer, accelerator)
    return out, logits_a, logits_b


def train_one_epoch(pair: PairNet, method: Method, loader, optimizer: torch.optim.Optimizer,
                    accelerator: Accelerator, *, epoch: int, forget_rate: float, meter: EpochMeter,
                    log_interval: int = 50, max_steps: Optional[int] = None, nan_policy: str = "stop",
                    should_stop: Callable[[], bool] = lambda: False, progress: bool | str = "auto",
                    stats: Optional["SampleStats"] = None, clip_grad: Optional[float] = None,
                    clip_mode: str = "norm") -> bool:
    """Train both networks with ``method`` from step ``meter.steps`` to the end of the epoch.

    Returns False if ``should_stop()`` (e.g. SIGTERM) asked to stop early; the meter then holds
    the partial epoch. ``should_stop`` is consulted at logging intervals, agreed by all processes.
    Each step runs under ``accelerator.accumulate`` (the Accelerator's gradient_accumulation_steps
    batches per update); ``clip_grad`` clips the norm (or each value) before an update.
    ``progress``: a progress bar, 'auto' only when stderr is a terminal (not in a log file).
    """
    pair.train()
    skip = SkipNonFiniteStep(pair, optimizer) if nan_policy == "skip" else None
    steps = len(loader) if max_steps is None else min(max_steps, len(loader))
    if meter.steps:  # resuming inside the epoch: the sampler order is a function of (seed, epoch)
        loader = accelerator.skip_first_batches(loader, meter.steps)
    show = sys.stderr.isatty() if progress == "auto" else bool(progress)
    bar = tqdm(total=steps, initial=meter.steps, desc=f"epoch {epoch + 1}", leave=False,
               disable=not (show and accelerator.is_local_main_process))
    wants_index = method.wants_index  # per-sample state: the batch's training-set positions
    for batch in loader:
        if meter.steps >= steps:
            break
        out, logits_a, logits_b = train_step(pair, method, batch, optimizer, accelerator, epoch=epoch,
                                             forget_rate=forget_rate, wants_index=wants_index, skip=skip,
                                             clip_grad=clip_grad, clip_mode=clip_mode)
        meter.update(batch, out.loss.detach(), out.selected_a, out.selected_b)
        if stats is not None:  # per-sample label-issue statistics (loss falls back to mean CE there)
            stats.update(batch, logits_a, logits_b, out)
        bar.update()

        if meter.steps % log_interval == 0 or meter.steps == steps:  # the only host reads
            check_finite(meter, accelerator, epoch, nan_policy)
            if not bar.disable:
                bar.set_postfix(loss=f"{meter.loss_sum().item() / meter.steps:.4f}")
            if meter.steps < steps and stop_requested(should_stop, accelerator):
                bar.close()
                return False
    bar.close()
    return True


def stop_requested(should_stop: Callable[[], bool], accelerator: Accelerator) -> bool:
    """Whether any process was asked to stop (so all stop together); one host read."""
    stop = torch.tensor(float(should_stop()), device=accelerator.device)
    return accelerator.reduce(stop, reduction="sum").item() > 0


@torch.no_grad()
def evaluate(pair: PairNet, loader, accelerator: Accelerator, drop_last: bool = False) -> dict[str, float]:
    """Test accuracy (%) of each network over the whole test set, gathered from all processes.
    Correct predictions are counted on the device and read once, at the end.

    ``drop_last``: the loader drops the last partial batch (``train.eval_drop_last``), so every
    batch is whole on every process. Then ``gather`` and not ``gather_for_metrics``: the latter
    would still cut the last batch it sees to the data set's remainder (1,000 % 128 = 104 of mnist5k's
    896 images kept), because the dropping is done by the batch sampler, not the DataLoader."""
    pair.eval()
    gather = accelerator.gather if drop_last else accelerator.gather_for_metrics
    correct: Optional[torch.Tensor] = None
    total = 0
    for batch in loader:
        logits = [z for z in pair(batch["pixel_values"]) if z is not None]
        *predictions, references = gather((*[z.argmax(dim=1) for z in logits], batch["label"]))
        hits = torch.stack([(p == references).sum() for p in predictions])
        correct = hits if correct is None else correct + hits
        total += references.numel()
    if correct is None:
        return {}
    return {f"test_acc_{name}": 100.0 * (n / total) if total else float("nan")
            for name, n in zip("ab", correct.tolist())}
