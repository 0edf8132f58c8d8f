"""What training accumulates per sample, on the device, read once at the end: ``SampleStats``,
the label-issue statistics over the last ``train.label_issue_epochs`` epochs (whether either
network selected each sample, the method's per-sample loss, whether the networks agree, and the
pair's latest softmax), saved to ``label_issue_stats.safetensors`` for ``label_report``. Only
the epochs the window will keep are gathered: the others skip the per-step writes.

(``EpochMeter``, what one epoch accumulates, is in ``engine``.)
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F

from ..core.errors import UserError
from ..models.timm_folder import make_readable

__all__ = ["SampleStats", "STATS_FILE", "CHECKPOINT_STATS_FILE"]

STATS_FILE = "label_issue_stats.safetensors"
CHECKPOINT_STATS_FILE = "sample_stats.safetensors"


def _mean(values: list[torch.Tensor]) -> torch.Tensor:
    """The networks' mean; one network's value as it is (0 + x and x / 1 are x: two operations
    per step saved, the same values)."""
    return values[0] if len(values) == 1 else sum(values) / len(values)


class SampleStats:
    """Per-sample statistics over the last ``window`` epochs, on the device.

    The step writes the current epoch's values by ``batch["index"]`` (assignments, no host
    sync); ``end_epoch`` combines the processes and moves them into a ring buffer of ``window``
    epochs. ``keep_from`` names the first epoch the window will hold at the end of training:
    earlier epochs are not gathered (``collecting`` is False), since they would be evicted.
    ``state_dict``/``load_state_dict`` keep a resumed run exact, also mid-epoch.
    """

    _CURRENT = ("cur_seen", "cur_selected", "cur_agree", "cur_loss")
    _WINDOW = ("seen", "selected", "agree", "loss")

    def __init__(self, num_samples: int, num_classes: int, window: int, device: torch.device | str):
        self.num_samples, self.num_classes, self.window, self.device = num_samples, num_classes, window, device
        self.epochs = 0  # host counter: epochs ended so far (gathered or not)
        self.first_gathered = 0  # the first epoch gathered (keep_from); 0: all of them
        n, w = num_samples, window
        self.cur_seen = torch.zeros(n, dtype=torch.bool, device=device)
        self.cur_selected = torch.zeros(n, dtype=torch.bool, device=device)
        self.cur_agree = torch.zeros(n, dtype=torch.bool, device=device)
        self.cur_loss = torch.zeros(n, device=device)
        self.seen = torch.zeros(w, n, dtype=torch.bool, device=device)
        self.selected = torch.zeros(w, n, dtype=torch.bool, device=device)
        self.agree = torch.zeros(w, n, dtype=torch.bool, device=device)
        self.loss = torch.zeros(w, n, device=device)
        self.probs = torch.zeros(n, num_classes, device=device)  # the pair's mean softmax, latest epoch
        self.given_label = torch.full((n,), -1, dtype=torch.long, device=device)
        self.clean_label = torch.full((n,), -1, dtype=torch.long, device=device)  # -1: unknown
        self.labels_known = False  # True: every sample's labels are set up front (for_dataset)

    @classmethod
    def for_dataset(cls, ds: Any, num_classes: int, window: int, device: torch.device | str) -> "SampleStats":
        """Stats for a training ``datasets.Dataset`` (``label``, optional ``clean_label``; row i has
        ``index`` i), with every sample's labels known from the start, seen or not."""
        from ..data.splits import column_array  # lazily: data is heavy

        stats = cls(len(ds), num_classes, window, device)
        for name, column in (("given_label", "label"), ("clean_label", "clean_label")):
            if column in ds.column_names:
                getattr(stats, name).copy_(torch.as_tensor(column_array(ds, column)))
        stats.labels_known = True
        return stats

    def keep_from(self, total_epochs: int) -> None:
        """Gather only the last ``window`` of ``total_epochs``: the epochs the window keeps."""
        self.first_gathered = max(0, total_epochs - self.window)

    @property
    def collecting(self) -> bool:
        """Whether the current epoch is one the window keeps (else the step skips ``update``)."""
        return self.epochs >= self.first_gathered

    def update(self, batch: dict[str, torch.Tensor], logits_a: torch.Tensor, logits_b: Optional[torch.Tensor],
               out: Any) -> None:
        """One training step (``out`` is the method's ``MethodOutput``); stays on the device.

        Every input is detached first, so nothing here joins the autograd graph; a ``no_grad``
        context would cost more per step than the writes. The writes are ``index_fill_`` /
        ``index_copy_`` (a batch's indices are unique): the values of ``t[index] = v``, in about
        half its time on the CPU."""
        index, targets = batch["index"], batch["label"]
        logits = [z.detach().float() for z in (logits_a, logits_b) if z is not None]
        loss = out.per_sample_loss
        if loss is None:  # fallback: the networks' mean cross-entropy
            loss = _mean([F.cross_entropy(z, targets, reduction="none") for z in logits])
        self.cur_seen.index_fill_(0, index, True)
        # selections are unique batch positions: as many as the batch means every sample
        if out.selected_a.numel() == index.numel():
            self.cur_selected.index_fill_(0, index, True)
        else:
            selected = torch.zeros(index.numel(), dtype=torch.bool, device=index.device)
            selected[out.selected_a] = True
            if out.selected_b is not None:
                selected[out.selected_b] = True
            self.cur_selected.index_copy_(0, index, selected)
        if len(logits) == 1:  # one network always agrees with itself: no argmax to compare
            self.cur_agree.index_fill_(0, index, True)
        else:
            self.cur_agree.index_copy_(0, index, logits[0].argmax(1) == logits[1].argmax(1))
        self.cur_loss.index_copy_(0, index, loss.detach().float())
        self.probs.index_copy_(0, index, _mean([z.softmax(1) for z in logits]))
        if not self.labels_known:  # built without the data set: the labels as the batches bring them
            self.given_label.index_copy_(0, index, targets)
            if "clean_label" in batch:
                self.clean_label.index_copy_(0, index, batch["clean_label"])

    def _combine(self, accelerator: Any) -> torch.Tensor:
        """Sum this epoch's values over the processes (each sample lives on one process, but a
        duplicate is averaged, not double-counted). Returns the number of processes per sample."""
        seen = self.cur_seen
        count = accelerator.reduce(seen.float(), reduction="sum")
        denom = count.clamp(min=1)
        mask = seen[:, None].float()
        for name in ("cur_selected", "cur_agree"):
            total = accelerator.reduce(getattr(self, name).float() * seen, reduction="sum")
            setattr(self, name, total / denom >= 0.5)
        self.cur_loss = accelerator.reduce(self.cur_loss * seen, reduction="sum") / denom
        probs = accelerator.reduce(self.probs * mask, reduction="sum") / denom[:, None]
        self.probs = torch.where(count[:, None] > 0, probs, self.probs)
        for name in ("given_label", "clean_label"):
            value = getattr(self, name)
            total = accelerator.reduce((value.float() + 1) * seen, reduction="sum")
            setattr(self, name, torch.where(count > 0, (total / denom).round().long() - 1, value))
        self.cur_seen = count > 0
        return count

    def consolidate(self, accelerator: Any) -> None:
        """Before a mid-epoch checkpoint: the main process takes the whole partial epoch and the
        others start theirs from zero (so the epoch-end sum is unchanged and one file holds it)."""
        if accelerator.num_processes == 1:
            return
        self._combine(accelerator)
        if not accelerator.is_main_process:
            self._zero_current()

    def _zero_current(self) -> None:
        for name in self._CURRENT:
            getattr(self, name).zero_()

    def end_epoch(self, accelerator: Any) -> None:
        """Combine the processes and move the epoch into the window (evicting the oldest); an
        epoch not gathered only counts (its slot, ``epochs % window``, is left as it was)."""
        if not self.collecting:
            self.epochs += 1
            return
        if accelerator.num_processes > 1:
            self._combine(accelerator)
        slot = self.epochs % self.window
        for cur, win in zip(self._CURRENT, self._WINDOW):
            getattr(self, win)[slot] = getattr(self, cur)
        self._zero_current()
        self.epochs += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        names = (*self._CURRENT, *self._WINDOW, "probs", "given_label", "clean_label")
        state = {name: getattr(self, name) for name in names}
        state["epochs"] = torch.tensor(self.epochs)
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor], accelerator: Any = None) -> None:
        if tuple(state["seen"].shape) != tuple(self.seen.shape) or tuple(state["probs"].shape) != tuple(self.probs.shape):
            raise UserError(f"The checkpoint's label-issue statistics cover {state['seen'].shape[0]} epochs x "
                            f"{tuple(state['probs'].shape)} samples x classes, this run {self.window} x "
                            f"{tuple(self.probs.shape)}; resume with the checkpoint's train.label_issue_epochs "
                            f"and data.")
        self.epochs = int(state["epochs"])
        for name, value in state.items():
            if name != "epochs":
                getattr(self, name).copy_(value)
        if accelerator is not None and not accelerator.is_main_process:
            self._zero_current()  # the partial epoch in the file belongs to the main process

    def save(self, path: Path, metadata: Optional[dict[str, Any]] = None) -> None:
        """The stats as safetensors; ``metadata`` (e.g. the forget rate) as its string header."""
        from safetensors.torch import save_file

        meta = {"window": str(self.window), "epochs": str(self.epochs),
                **{k: json.dumps(v) for k, v in (metadata or {}).items()}}
        save_file({k: v.contiguous().cpu() for k, v in self.state_dict().items()}, str(path), metadata=meta)
        make_readable(path)
