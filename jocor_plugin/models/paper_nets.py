"""The paper's networks as registered timm models: ``jocor_mlp`` (MNIST) and ``jocor_cnn`` (CIFAR).

After ``import jocor_plugin``, ``timm.create_model("jocor_mlp")`` and ``"jocor_cnn"`` work like
any timm model (data config, ``pretrained_cfg_overlay=dict(file=...)``, ``reset_classifier``).
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

__all__ = ["JoCoRMLP", "JoCoRCNN", "jocor_mlp", "jocor_cnn"]


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
    if "img_size" in kwargs or "in_chans" in kwargs:  # keep the data config in step with the model
        overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})  # (else timm refuses to export it)
        default = default_cfgs[variant].default.input_size
        size = kwargs.get("img_size", default[1])
        overlay.setdefault("input_size", (kwargs.get("in_chans", default[0]), size, size))
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
