"""The paper's networks as registered timm models, and ``PairNet``: two instances of any backbone.

After ``import jocor_plugin``, ``timm.create_model("jocor_mlp")`` and ``"jocor_cnn"`` work like
any timm model (data config, ``pretrained_cfg_overlay=dict(file=...)``, ``reset_classifier``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from .errors import ModelError, did_you_mean

__all__ = ["JoCoRMLP", "JoCoRCNN", "PairNet", "create_pair", "create_backbone"]


class _Classifier(nn.Module):
    """What timm expects of a classifier, shared by the paper's networks: ``head`` on
    ``num_features`` (flattened) features, dropout before it."""

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = F.dropout(x.flatten(1), self.drop_rate, self.training)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class JoCoRMLP(_Classifier):
    """MLP of the paper's MNIST experiments: flatten -> Dense 256, ReLU -> Dense C."""

    def __init__(self, num_classes: int = 10, in_chans: int = 1, img_size: int = 28,
                 hidden_dim: int = 256, drop_rate: float = 0.0, **kwargs: Any):
        super().__init__()
        self.num_classes, self.num_features, self.drop_rate = num_classes, hidden_dim, drop_rate
        self.fc1 = nn.Linear(in_chans * img_size * img_size, hidden_dim)
        self.head = nn.Linear(hidden_dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc1(x.flatten(1)))


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class JoCoRCNN(_Classifier):
    """7-layer CNN of the paper's CIFAR experiments (Table 7; channel widths as the authors' code:
    64-64 / 128-128 / 196-16, 2x2 max-pool after each pair, then Dense 16*(s/8)^2 -> C)."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3, img_size: int = 32,
                 drop_rate: float = 0.0, **kwargs: Any):
        super().__init__()
        self.num_classes, self.drop_rate = num_classes, drop_rate
        widths = [(in_chans, 64), (64, 64), None, (64, 128), (128, 128), None, (128, 196), (196, 16), None]
        self.features = nn.Sequential(*[nn.MaxPool2d(2) if w is None else _conv_bn_relu(*w)
                                        for w in widths])
        self.num_features = 16 * (img_size // 8) ** 2
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# The authors feed raw [0, 1] pixels (ToTensor, no normalisation): mean 0, std 1 reproduces that.
default_cfgs = generate_default_cfgs({
    "jocor_mlp.untrained": dict(num_classes=10, input_size=(1, 28, 28), mean=(0.0,), std=(1.0,),
                                interpolation="bilinear", crop_pct=1.0, first_conv=None,
                                classifier="head"),
    "jocor_cnn.untrained": dict(num_classes=10, input_size=(3, 32, 32), mean=(0.0, 0.0, 0.0),
                                std=(1.0, 1.0, 1.0), interpolation="bilinear", crop_pct=1.0,
                                first_conv="features.0.0", classifier="head"),
})


def _build(cls: type, variant: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    if "img_size" in kwargs:  # keep the data config (resolve_data_config) in step with the model
        overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
        in_chans = kwargs.get("in_chans", default_cfgs[variant].default.input_size[0])
        overlay.setdefault("input_size", (in_chans, kwargs["img_size"], kwargs["img_size"]))
        kwargs["pretrained_cfg_overlay"] = overlay
    return build_model_with_cfg(cls, variant, pretrained, **kwargs)


@register_model
def jocor_mlp(pretrained: bool = False, **kwargs: Any) -> JoCoRMLP:
    """The paper's MNIST MLP (784-256-C)."""
    return _build(JoCoRMLP, "jocor_mlp", pretrained, **kwargs)


@register_model
def jocor_cnn(pretrained: bool = False, **kwargs: Any) -> JoCoRCNN:
    """The paper's 7-layer CIFAR CNN."""
    return _build(JoCoRCNN, "jocor_cnn", pretrained, **kwargs)


class PairNet(nn.Module):
    """Two networks trained as one module, so one optimizer and one ``prepare`` cover both.

    ``forward`` returns ``(logits_a, logits_b)``; ``logits_b`` is None for single-network methods.
    """

    def __init__(self, net_a: nn.Module, net_b: Optional[nn.Module] = None):
        super().__init__()
        self.net_a, self.net_b = net_a, net_b

    @property
    def networks(self) -> list[nn.Module]:
        return [n for n in (self.net_a, self.net_b) if n is not None]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        return self.net_a(x), (self.net_b(x) if self.net_b is not None else None)


def create_backbone(name: str, *, num_classes: int, in_chans: int, pretrained: bool = False,
                    pretrained_file: Optional[str] = None, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` with errors that say what to fix (unknown name, missing weights)."""
    if not timm.is_model(name):
        hint = did_you_mean(name, timm.list_models(), n=3)
        raise ModelError(f"model.name={name!r} is not a timm model.{hint} "
                         f"List them with: python -c \"import timm; print(timm.list_models('*{name[:4]}*'))\"")
    if pretrained_file is not None:
        if not Path(pretrained_file).is_file():
            raise ModelError(f"model.pretrained_file={pretrained_file!r} does not exist; give the path "
                             f"of a .safetensors/.pth weight file for {name}.")
        kwargs["pretrained_cfg_overlay"] = dict(file=str(pretrained_file))
        pretrained = True
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes,
                                 in_chans=in_chans, **kwargs)
    except TypeError as err:
        raise ModelError(f"timm.create_model({name!r}) rejected an argument: {err}. Check model.kwargs.") from err
    except Exception as err:  # offline hub, corrupt file, weights of another architecture, ...
        if not pretrained:
            raise
        reason = str(err).splitlines()[0][:300]
        if pretrained_file:
            raise ModelError(f"Could not load pretrained weights for {name} from {pretrained_file}: {reason}. "
                             f"Give a .safetensors (or weights-only .pth) file of {name}'s weights; or set "
                             f"model.pretrained=false.") from err
        raise ModelError(f"Could not load pretrained weights for {name} from the Hugging Face Hub: {reason}. "
                         f"Offline? Download the weights elsewhere and set model.pretrained_file=PATH; or set "
                         f"model.pretrained=false.") from err


def create_pair(name: str, *, num_classes: int, in_chans: int, num_networks: int = 2,
                seed: int = 0, **kwargs: Any) -> PairNet:
    """Build ``num_networks`` (1 or 2) instances of a backbone, each from its own seed, so the
    two start different (as the paper requires) without touching the global RNG."""
    nets = []
    for i in range(num_networks):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + i)
            nets.append(create_backbone(name, num_classes=num_classes, in_chans=in_chans, **kwargs))
    return PairNet(*nets)
