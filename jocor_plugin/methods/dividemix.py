"""DivideMix (Li, Socher, Hoi, ICLR 2020): co-divide by loss mixtures, then MixMatch per network.

The method owns its training epochs (``train_epoch``), as the authors' ``Train_CIFAR.py``:

* epochs < ``warmup_epochs``: each network in turn, one pass over the whole training set with
  cross-entropy (+ the confidence penalty under asymmetric noise);
* later epochs: each network's cross-entropy on every training sample (eval mode, gathered from
  all processes) -> min-max normalised -> a two-component GMM per network -> clean probability
  (``codivide.py``); network A then trains on B's division and B on A's (A first, the peer fixed in
  eval mode), one pass over its labelled part per epoch with the unlabelled part cycled alongside,
  each step the MixMatch of ``mixmatch.py``.

Batch sizes follow the authors' code at the paper's batch 128: warm-up batches of
``train.batch_size``; a MixMatch step takes ``train.batch_size // 2`` labelled and as many
unlabelled samples (64 + 64 in the authors' code), each in ``views`` augmentations.

Augmentation, both phases (the authors use crop + flip throughout): in-memory images get a random
crop with zero padding (``crop_padding``, default round(size / 8): 4 px at 28-32 px, as CIFAR's
4 of 32) and a horizontal flip (``flip``; default on, except for digit data -- mnist*, digits --
where a mirror changes the class); streamed images get the training transform of ``data.train_transform``.

Every process draws the same sample order and keeps its share, and each network's gradient is
averaged over the processes by hand (the networks are called unwrapped, one at a time); the
per-sample pass is the trainer's (``per_sample_outputs``, gathered), so every process fits the same
mixtures. Each step feeds the trainer's meter: label precision = the clean fraction of each
network's labelled set. ``after_epoch`` adds ``labelled_fraction_a|b``, ``clean_auc_a|b`` (the
clean probability against the true noise, where known), ``loss_x``/``loss_u`` and
``test_acc_ensemble`` (the mean of both networks' logits: the authors' test prediction). The
label-issue statistics take the mixtures' clean probability: per-sample score 1 - mean clean
probability, "selected" = labelled for either network. With ``loss_history`` > 1 the history is
not checkpointed: a resumed run refills it.

``train.fidelity=authors_code`` takes the authors' ``Train_CIFAR.py`` set-up on CIFAR-10/100
(``AUTHORS_CODE``: PreAct ResNet-18, SGD lr 0.02 / 10 from epoch 150, 301 epochs, warm-up 10 / 30,
the 5-epoch loss history at 90 % noise, their symmetric noise ``symmetric_incl_true``), each key
unless the command line sets it (the recipes' JoCoR set-up gives way; docs/fidelity.md, "DivideMix").
"""
from __future__ import annotations

import logging
from typing import Any, Mapping, Optional

import numpy as np
import torch
import torch.nn.functional as F

from . import mixmatch
from .base import Method, MethodOutput, per_sample_ce, require_argument
from .codivide import Division, clean_probability, co_divide, normalise_losses
from .contract import TrainerContext
from .mixmatch import linear_rampup, mix_lambda, mixmatch_losses
from .registry import register_method

__all__ = ["DivideMix"]

logger = logging.getLogger(__name__)

#: data whose class a horizontal mirror can change: no flip by default
DIGIT_DATA = ("mnist", "digits")
#: layers that make a backbone indifferent to where a pattern sits, as the random crop assumes
CONVOLUTIONS = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)


def _cifar(cfg: Any) -> Optional[str]:
    """'cifar10' / 'cifar100' when the run's data is one of them (the data the authors'
    ``Train_CIFAR.py`` trains), else None."""
    name = str(cfg.data.name or "").lower().rsplit("/", 1)[-1].replace("-", "").replace("_", "")
    return "cifar100" if "cifar100" in name else "cifar10" if "cifar10" in name else None


def _on_cifar(value: Any, with_their_optimizer: bool = False) -> Any:
    """An authors' value that holds on CIFAR-10/100 only (None elsewhere: the recipe's stays), and
    with ``with_their_optimizer`` only where optim.name is theirs (a recipe's Adam keeps its own lr,
    weight decay and schedule: no half of their set-up on another optimizer)."""
    def theirs(cfg: Any) -> Any:
        if not _cifar(cfg) or (with_their_optimizer and cfg.optim.name != "momentum"):
            return None
        return value(cfg) if callable(value) else value
    return theirs


#: train.fidelity=authors_code: the authors' Train_CIFAR.py (LiJunnan1992/DivideMix, docs/fidelity.md,
#: "DivideMix") on CIFAR-10/100; on other data it sets nothing.
AUTHORS_CODE = {
    # PreResNet.py ResNet18 (PreActBlock, [2,2,2,2]), Train_CIFAR.py create_model; normalisation per data set
    "model.name": _on_cifar(lambda cfg: "preact_resnet18.cifar100" if _cifar(cfg) == "cifar100"
                            else "preact_resnet18"),
    # optim.SGD(lr=args.lr (0.02), momentum=0.9, weight_decay=5e-4) per network: classical momentum,
    # weight decay on every parameter (timm's factory would exempt biases and norms)
    "optim.name": _on_cifar("momentum"),
    "optim.lr": _on_cifar(0.02, True),
    "optim.momentum": _on_cifar(0.9, True),
    "optim.weight_decay": _on_cifar(5e-4, True),
    "optim.kwargs.filter_bias_and_bn": _on_cifar(False, True),
    # `lr = args.lr; if epoch >= 150: lr /= 10`
    "optim.schedule": _on_cifar("piecewise", True),
    "optim.lr_steps": _on_cifar([0.02, 0.002], True),
    "optim.step_epochs": _on_cifar(150, True),
    # `for epoch in range(args.num_epochs+1)`, num_epochs 300: epochs 0..300
    "train.epochs": _on_cifar(301),
    # --batch_size 64: 64 labelled + 64 unlabelled per MixMatch step, warm-up batches of 2 x 64
    # (dataloader_cifar.py 'warmup'): our train.batch_size 128 (MixMatch takes half of it)
    "train.batch_size": _on_cifar(128),
    # `warm_up = 10` (cifar10), `30` (cifar100)
    "method.kwargs.warmup_epochs": _on_cifar(lambda cfg: 30 if _cifar(cfg) == "cifar100" else 10),
    # eval_train: `if args.r==0.9: ... history[-5:].mean(0)`
    "method.kwargs.loss_history": _on_cifar(lambda cfg: 5 if abs(cfg.noise.rate - 0.9) < 1e-9 else None),
    # dataloader_cifar.py noise_mode='sym': randint over all classes, the true one included
    "noise.type": _on_cifar(lambda cfg: "symmetric_incl_true" if cfg.noise.type == "symmetric" else None),
}


@register_method("dividemix")
class DivideMix(Method):
    """Co-divide by per-network loss mixtures, then MixMatch with co-refinement and co-guessing."""

    uses_forget_rate = False  # the mixture divides the data, not a share tau of each batch
    authors_code_defaults = AUTHORS_CODE

    def __init__(self, warmup_epochs: int = 10, p_threshold: float = 0.5, temperature: float = 0.5,
                 alpha: float = 4.0, lambda_u: float = 25.0, views: int = 2, loss_history: int = 1,
                 confidence_penalty: Optional[bool] = None, flip: Optional[bool] = None,
                 crop_padding: Optional[int] = None):
        self.check_arguments(dict(warmup_epochs=warmup_epochs, p_threshold=p_threshold, temperature=temperature,
                                  alpha=alpha, lambda_u=lambda_u, views=views, loss_history=loss_history,
                                  crop_padding=crop_padding))
        self.warmup_epochs, self.p_threshold = warmup_epochs, p_threshold
        self.temperature, self.alpha, self.lambda_u, self.views = temperature, alpha, lambda_u, views
        self.loss_history = loss_history  # epochs of normalised losses averaged (the authors: 5 at 90 % noise)
        self.confidence_penalty = confidence_penalty  # None: on for asymmetric noise (from_config)
        self.flip, self.crop_padding = flip, crop_padding  # None: from the data (before_training)
        self._history: list[list[torch.Tensor]] = [[], []]
        self._epoch: dict[str, Any] = {}

    @classmethod
    def check_arguments(cls, arguments: Mapping[str, Any]) -> None:
        """The ranges DivideMix can train with; the recipe check calls this when a recipe is loaded,
        so a grid's up-front check catches a bad value instead of every run failing late."""
        a = arguments
        require_argument(a["warmup_epochs"] >= 0, "warmup_epochs", a["warmup_epochs"],
                         "use >= 0 (epochs of plain cross-entropy before the first division)")
        require_argument(0.0 <= a["p_threshold"] <= 1.0, "p_threshold", a["p_threshold"],
                         "it must be in [0, 1] (the clean probability that labels a sample)")
        require_argument(a["temperature"] > 0, "temperature", a["temperature"], "use > 0 (the sharpening temperature)")
        require_argument(a["alpha"] >= 0, "alpha", a["alpha"], "use >= 0 (mixup's Beta(alpha, alpha); 0 turns "
                                                               "mixup off)")
        require_argument(a["lambda_u"] >= 0, "lambda_u", a["lambda_u"], "use >= 0 (the unlabelled loss's weight)")
        require_argument(a["views"] >= 1, "views", a["views"], "use >= 1 (augmented views per sample)")
        require_argument(a["loss_history"] >= 1, "loss_history", a["loss_history"],
                         "use >= 1 (epochs of losses the division averages)")
        require_argument(a["crop_padding"] is None or a["crop_padding"] >= 0, "crop_padding", a["crop_padding"],
                         "use >= 0 pixels (0: no crop), or null for the image size / 8")

    # ------------------------------------------------------------------ the warm-up loss

    def __call__(self, logits_a: torch.Tensor, logits_b: Optional[torch.Tensor], targets: torch.Tensor, *,
                 forget_rate: float, epoch: int) -> MethodOutput:
        """The warm-up loss: each network's cross-entropy (+ the confidence penalty), every sample."""
        loss = sum(self.warmup_loss(z, targets) for z in (logits_a, logits_b) if z is not None)
        everything = torch.arange(targets.numel(), device=targets.device)
        return MethodOutput(loss=loss, selected_a=everything,
                            selected_b=everything if logits_b is not None else None)

    def warmup_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        loss = per_sample_ce(logits, targets).mean()
        return loss + mixmatch.confidence_penalty(logits) if self.confidence_penalty else loss

    # ------------------------------------------------------------------ trainer hooks

    def before_training(self, trainer: TrainerContext) -> None:
        """Resolve the data-dependent defaults (from ``trainer.data_info``) and build the view
        source (in-memory data: the trainer's decoded images, not a second decoding)."""
        cfg, info = trainer.cfg, trainer.data_info
        if self.confidence_penalty is None:
            self.confidence_penalty = info.noise_type == "asymmetric"
        if self.flip is None:
            self.flip = not (info.dataset or info.name.rsplit("/", 1)[-1]).lower().startswith(DIGIT_DATA)
        crop_chosen = self.crop_padding is not None
        if not crop_chosen:
            self.crop_padding = max(1, round(min(trainer.image_config["input_size"][1:]) / 8))
        self._source = trainer.view_batches(self.views, flip=self.flip, padding=self.crop_padding)
        net = trainer.accelerator.unwrap_model(trainer.pair).networks[0]
        if not crop_chosen and self._source.in_memory is not None and not any(
                isinstance(m, CONVOLUTIONS) for m in net.modules()):
            logger.warning("DivideMix: %s has no convolution, so the %d px random crop moves every pixel onto "
                           "another input weight; on mnist5k DivideMix with the paper's MLP scored 2-23 points "
                           "higher without it. Set method.kwargs={crop_padding: 0} to train without the crop "
                           "(docs/methods.md, 'JoCoR or DivideMix?').", trainer.cfg.model.name, self.crop_padding)
        batched = [f"crop (padding {self.crop_padding})"] * bool(self.crop_padding) + ["flip"] * bool(self.flip)
        logger.info("DivideMix: %d warm-up epochs, p_threshold %g, T %g, alpha %g, lambda_u %g, %d views, "
                    "confidence penalty %s, augmentation: %s.", self.warmup_epochs, self.p_threshold,
                    self.temperature, self.alpha, self.lambda_u, self.views,
                    "on" if self.confidence_penalty else "off",
                    (" + ".join(batched) or "none (only mixup varies the views)")
                    if self._source.in_memory is not None else f"data.train_transform={cfg.data.train_transform}")
        trained = cfg.train.epochs - cfg.train.first_epoch
        if self.warmup_epochs >= trained:  # accepted (a warm-up alone is a valid, if odd, baseline), but said
            counted = f" (train.epochs={cfg.train.epochs} from train.first_epoch={cfg.train.first_epoch})" \
                if cfg.train.first_epoch else ""
            logger.warning("DivideMix: warmup_epochs=%d covers all %d trained epochs%s, so it never divides the "
                           "data: every epoch is plain cross-entropy on every sample. Lower "
                           "method.kwargs.warmup_epochs below %d or raise train.epochs.", self.warmup_epochs,
                           trained, counted, trained)

    def train_epoch(self, trainer: TrainerContext, epoch: int, forget_rate: float) -> bool:
        """One DivideMix epoch (warm-up, or co-divide + MixMatch). It runs to its end: a stop
        request is honoured after it, at the trainer's epoch boundary."""
        nets = trainer.accelerator.unwrap_model(trainer.pair).networks
        n = len(trainer.splits.train)
        device = trainer.accelerator.device
        self._epoch = {"steps": 0, "lx": torch.zeros((), device=device), "lu": torch.zeros((), device=device)}
        if epoch < self.warmup_epochs:
            for i, net in enumerate(nets):
                self._warm_up(trainer, net, epoch, i)
            everything = torch.ones(n, dtype=torch.bool)
            self._epoch["divisions"] = (Division(everything, torch.ones(n)), Division(everything, torch.ones(n)))
            return True
        logits_a, logits_b, labels, index = trainer.per_sample_outputs()
        logits, labels = _in_order([logits_a, logits_b], labels, index)
        probs = []
        for i, z in enumerate(logits):
            losses = normalise_losses(F.cross_entropy(z.float(), labels, reduction="none"))
            probs.append(clean_probability(self.division_input(i, losses), seed=trainer.cfg.train.seed + epoch))
        divisions = co_divide(*probs, self.p_threshold)
        self._epoch.update(divisions=divisions, probs=probs, logits=logits, labels=labels)
        for i, (net, division) in enumerate(zip(nets, divisions)):
            self._mixmatch_epoch(trainer, net, nets[1 - i], division, epoch, i)
        return True

    def division_input(self, which: int, losses: torch.Tensor) -> torch.Tensor:
        """What network ``which``'s mixture is fitted to this epoch: its normalised ``losses``, or
        with ``loss_history`` > 1 the mean of the last ``loss_history`` epochs' (this one's
        included; fewer while there are fewer), as the authors' ``eval_train`` at 90 % noise
        (``history[-5:].mean(0)``). Appends ``losses`` to the history."""
        self._history[which] = (self._history[which] + [losses])[-self.loss_history:]
        if self.loss_history == 1:
            return losses
        return torch.stack(self._history[which]).mean(dim=0)

    def after_epoch(self, trainer: TrainerContext, epoch: int, record: dict[str, Any]) -> None:
        """DivideMix's own figures into ``record`` (the meter gave loss and label precision)."""
        acc, ep = trainer.accelerator, self._epoch
        divisions = ep["divisions"]
        for name, division in zip("ab", divisions):
            record[f"labelled_fraction_{name}"] = division.labelled.float().mean().item()
        if epoch >= self.warmup_epochs and ep["steps"]:
            record["loss_x"] = acc.reduce(ep["lx"], reduction="mean").item() / ep["steps"]
            record["loss_u"] = acc.reduce(ep["lu"], reduction="mean").item() / ep["steps"]
        train = trainer.splits.train
        if "probs" in ep and "is_noisy" in train.column_names:
            from sklearn.metrics import roc_auc_score

            clean = ~trainer.training_column("is_noisy").astype(bool)
            if clean.any() and not clean.all():  # the authors log this AUC of each division
                for name, division in zip("ab", divisions):
                    record[f"clean_auc_{name}"] = float(roc_auc_score(clean, division.prob.numpy()))
        record["test_acc_ensemble"] = self._ensemble_accuracy(trainer)
        stats = trainer.stats
        if stats is not None and "probs" in ep:
            self._update_stats(stats, ep)

    # ------------------------------------------------------------------ the epoch's parts

    def _warm_up(self, trainer: TrainerContext, net: torch.nn.Module, epoch: int, which: int) -> None:
        """One pass of ``net`` over the whole training set with the warm-up loss (as the authors:
        each network on its own shuffle, one after the other)."""
        cfg, acc = trainer.cfg, trainer.accelerator
        net.train()
        everything = torch.arange(len(trainer.splits.train))
        batches = shard_batches(everything, cfg.train.batch_size, self._generator(trainer, epoch, which),
                                acc.num_processes, acc.process_index)[:cfg.train.max_steps_per_epoch]
        trainer.zero_grad()
        for batch in self._source.batches(batches):
            with acc.autocast():
                logits = net(batch["views"][0])
            self._step(trainer, net, which, self.warmup_loss(logits, batch["label"]), batch)
        trainer.check_finite(epoch)  # one host read per network's pass

    def _mixmatch_epoch(self, trainer: TrainerContext, net: torch.nn.Module, peer: torch.nn.Module, division: Division,
                        epoch: int, which: int) -> None:
        """One pass of ``net`` over its labelled part (the peer's division), the unlabelled part
        cycled alongside, one MixMatch step per batch; the peer only guesses (eval mode)."""
        cfg, acc = trainer.cfg, trainer.accelerator
        world, rank = acc.num_processes, acc.process_index
        size = max(1, cfg.train.batch_size // 2)
        generator = self._generator(trainer, epoch, which)
        labelled = torch.nonzero(division.labelled).squeeze(1)
        unlabelled = torch.nonzero(~division.labelled).squeeze(1)
        x_batches = shard_batches(labelled, size, generator, world, rank)[:cfg.train.max_steps_per_epoch]
        if not x_batches:
            logger.warning("DivideMix epoch %d: the division for network %s labels no sample; it is not "
                           "trained this epoch.", epoch + 1, "ab"[which])
            return
        u_batches: list[torch.Tensor] = []
        while unlabelled.numel() and len(u_batches) < len(x_batches):  # cycled, reshuffled each pass
            u_batches += shard_batches(unlabelled, size, generator, world, rank)
        num_iter = -(-labelled.numel() // world) // size + 1  # the authors' steps per epoch, for the ramp-up
        weights = division.prob.to(acc.device)
        rng = np.random.default_rng([trainer.cfg.train.seed, epoch, which])
        u_source = self._source.batches(u_batches[:len(x_batches)]) if u_batches else iter(lambda: None, 0)
        net.train()
        peer.eval()
        trainer.zero_grad()
        for step, (bx, bu) in enumerate(zip(self._source.batches(x_batches), u_source)):
            u_views = bu["views"] if bu is not None else []
            lam = mix_lambda(self.alpha, rng)
            total = sum(v.shape[0] for v in (*bx["views"], *u_views))
            perm = torch.randperm(total, device=acc.device)
            with acc.autocast():
                lx, lu, penalty = mixmatch_losses(net, peer, bx["views"], bx["label"], weights[bx["index"]],
                                                  u_views, temperature=self.temperature, lam=lam, perm=perm)
            weight_u = linear_rampup(epoch + step / num_iter, self.warmup_epochs, self.lambda_u)
            seen = bx if bu is None else {k: torch.cat([bx[k], bu[k]]) for k in ("index", "is_noisy") if k in bx}
            self._step(trainer, net, which, lx + weight_u * lu + penalty, seen, bx["index"].numel(), lx, lu)
        trainer.check_finite(epoch)  # one host read per network's pass

    def _step(self, trainer: TrainerContext, net: torch.nn.Module, which: int, loss: torch.Tensor, seen: dict[str, Any],
              trained: Optional[int] = None, lx: Optional[torch.Tensor] = None,
              lu: Optional[torch.Tensor] = None) -> None:
        """Backward, average ``net``'s gradient over the processes, step, and tell the trainer's
        meter: ``seen`` holds the step's ``index`` (and ``is_noisy``), its first ``trained`` samples
        (default all) are the ones network ``which`` learned their given labels from."""
        acc, ep = trainer.accelerator, self._epoch
        acc.backward(loss)
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        if acc.num_processes > 1:  # called unwrapped, so DDP does not average: one all-reduce
            flat = acc.reduce(torch.cat([g.reshape(-1) for g in grads]), reduction="mean")
            for g, synced in zip(grads, flat.split([g.numel() for g in grads])):
                g.copy_(synced.view_as(g))
        with trainer.guarded_step(net):  # nan_policy=skip: a non-finite step changes nothing
            trainer.optimizer.step()
        trainer.zero_grad()
        positions = torch.arange(seen["index"].numel() if trained is None else trained, device=loss.device)
        selected = (positions, positions[:0]) if which == 0 else (positions[:0], positions)
        trainer.meter.update(seen, loss.detach().float(), *selected)
        if lx is not None:
            ep["lx"] += lx.detach()
            ep["lu"] += lu.detach()
            ep["steps"] += 1

    @torch.no_grad()
    def _ensemble_accuracy(self, trainer: TrainerContext) -> float:
        """Test accuracy (%) of the mean of both networks' logits (the authors' test prediction)."""
        acc = trainer.accelerator
        nets = acc.unwrap_model(trainer.pair).networks
        for net in nets:
            net.eval()
        correct = torch.zeros((), device=acc.device)
        total = 0
        for batch in trainer.eval_loaders["test"]:
            with acc.autocast():
                mean = sum(net(batch["pixel_values"]).float() for net in nets) / len(nets)
            pred, label = acc.gather_for_metrics((mean.argmax(dim=1), batch["label"]))
            correct += (pred == label).sum()
            total += label.numel()
        return 100.0 * correct.item() / max(total, 1)

    def _update_stats(self, stats: Any, ep: dict[str, Any]) -> None:
        """Label-issue statistics from the epoch's pass: the mixtures' clean probability as the
        per-sample score (1 - mean), labelled-for-either as 'selected', the pair's softmax."""
        divisions, device = ep["divisions"], stats.device
        labels = ep["labels"].to(device)
        batch = {"index": torch.arange(labels.numel(), device=device), "label": labels}
        selected = [torch.nonzero(d.labelled).squeeze(1).to(device) for d in divisions]
        clean_prob = (ep["probs"][0] + ep["probs"][1]).to(device) / 2
        stats.update(batch, ep["logits"][0].to(device), ep["logits"][1].to(device),
                     MethodOutput(loss=clean_prob.sum(), selected_a=selected[0], selected_b=selected[1],
                                  per_sample_loss=1.0 - clean_prob))

    def _generator(self, trainer: TrainerContext, epoch: int, which: int) -> torch.Generator:
        """The same shuffle on every process, a function of (seed, epoch, network)."""
        return torch.Generator().manual_seed(int(np.random.SeedSequence(
            [trainer.cfg.train.seed, epoch, which]).generate_state(1)[0]))


def _in_order(logits: list[torch.Tensor], labels: torch.Tensor,
              index: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Rows put at their training-set index (float32 logits)."""
    order = torch.argsort(index)
    return [z[order].float() for z in logits], labels[order]


def shard_batches(indices: torch.Tensor, batch_size: int, generator: torch.Generator, world: int,
                  rank: int) -> list[torch.Tensor]:
    """Shuffle ``indices`` (the same way on every process), keep this process's share (padded by
    wrapping so every process takes as many steps) and cut it into batches, the last one kept
    (as the authors' loaders) but never of one sample, which batch norm cannot train on."""
    if indices.numel() == 0:
        return []
    order = indices[torch.randperm(indices.numel(), generator=generator)]
    share = -(-order.numel() // world)
    order = order.repeat(-(-share * world // order.numel()))[:share * world]
    batches = list(order[rank::world].split(batch_size))
    if len(batches) > 1 and batches[-1].numel() == 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches
