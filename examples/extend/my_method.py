"""A method of your own: one network on the samples whose loss is below the batch median
(a fixed forget rate of 0.5), reporting how many it kept. Select it with
``method.imports=my_method method.name=median_loss`` (this folder on PYTHONPATH)."""
import torch

from jocor_plugin.methods import Method, MethodOutput, per_sample_ce, register_method


@register_method("median_loss")
class MedianLoss(Method):
    """One network trained on the half of each batch with the smaller cross-entropy."""

    num_networks = 1

    def __call__(self, logits_a, logits_b, targets, *, forget_rate, epoch) -> MethodOutput:
        losses = per_sample_ce(logits_a, targets)
        keep = torch.nonzero(losses <= losses.median()).squeeze(1)
        return MethodOutput(loss=losses[keep].mean(), selected_a=keep, selected_b=None)

    def after_epoch(self, trainer, epoch: int, record: dict) -> None:
        record["median_loss_kept"] = record["selected_fraction"]  # a hook adding to the epoch's record
