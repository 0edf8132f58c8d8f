"""PreAct ResNet-18 for 32 x 32 images, as DivideMix's authors train it on CIFAR, registered with timm.

``timm.create_model("preact_resnet18")`` (after ``import jocor_plugin``) builds the network of the
DivideMix code's ``PreResNet.py`` ``ResNet18``: a 3x3 stem conv (64, stride 1) -> BN -> ReLU, four
stages of two pre-activation basic blocks (64, 128, 256, 512 channels; stride 1, 2, 2, 2; BN ->
ReLU -> conv 3x3 -> BN -> ReLU -> conv 3x3, the shortcut taken from the first pre-activation:
itself, or a bias-free 1x1 conv of it where the shape changes), global average pooling (their ``avg_pool2d(out, 4)`` on the
4 x 4 map of a 32 x 32 input) and a linear classifier. Convolutions have no bias; every layer keeps
PyTorch's default initialisation, as theirs. 11,171,274 parameters at 10 classes.

The data config normalises as their loaders: CIFAR-10's mean / std by default (tag ``cifar10``), and
``preact_resnet18.cifar100`` for CIFAR-100's.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

__all__ = ["PreActBlock", "PreActResNet", "preact_resnet18"]


class PreActBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3x3-BN-ReLU-conv3x3, plus the shortcut of the first
    pre-activation relu(bn1(x)): itself, or a 1x1 conv of it when stride or width change. (As their
    ``PreActBlock``, whose empty ``nn.Sequential()`` shortcut is applied to the pre-activation, not
    to x as in He et al.'s identity mapping.)"""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: Optional[nn.Module] = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = out if self.shortcut is None else self.shortcut(out)
        out = self.conv2(F.relu(self.bn2(self.conv1(out))))
        return out + shortcut


class PreActResNet(nn.Module):
    """PreAct ResNet for small images: stem conv 3x3 stride 1 + BN + ReLU, stages of
    ``PreActBlock``, global average pool, linear ``head`` (timm's classifier interface)."""

    def __init__(self, layers: tuple[int, ...] = (2, 2, 2, 2), num_classes: int = 10, in_chans: int = 3,
                 drop_rate: float = 0.0, **kwargs: Any):
        super().__init__()
        self.num_classes, self.drop_rate = num_classes, drop_rate
        self.conv1 = nn.Conv2d(in_chans, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        stages, in_planes = [], 64
        for planes, blocks, stride in zip((64, 128, 256, 512), layers, (1, 2, 2, 2)):
            stage = []
            for s in [stride] + [1] * (blocks - 1):
                stage.append(PreActBlock(in_planes, planes, s))
                in_planes = planes
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.num_features = in_planes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = F.dropout(x.mean(dim=(2, 3)), self.drop_rate, self.training)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


_CIFAR = dict(num_classes=10, input_size=(3, 32, 32), interpolation="bilinear", crop_pct=1.0,
              first_conv="conv1", classifier="head")
# the normalisation of the DivideMix authors' dataloader_cifar.py (transforms.Normalize per data set)
default_cfgs = generate_default_cfgs({
    "preact_resnet18.cifar10": dict(_CIFAR, mean=(0.4914, 0.4822, 0.4465), std=(0.2023, 0.1994, 0.2010)),
    "preact_resnet18.cifar100": dict(_CIFAR, num_classes=100, mean=(0.507, 0.487, 0.441),
                                     std=(0.267, 0.256, 0.276)),
})


@register_model
def preact_resnet18(pretrained: bool = False, **kwargs: Any) -> PreActResNet:
    """PreAct ResNet-18 for 32 x 32 images (DivideMix's CIFAR network)."""
    if "in_chans" in kwargs:  # keep the data config's channels in step with the model
        overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
        overlay.setdefault("input_size", (kwargs["in_chans"], 32, 32))
        if kwargs["in_chans"] != 3:
            overlay.setdefault("mean", (0.5,) * kwargs["in_chans"])
            overlay.setdefault("std", (0.5,) * kwargs["in_chans"])
        kwargs["pretrained_cfg_overlay"] = overlay
    kwargs.pop("img_size", None)  # any size works (global pooling); the data config says 32
    return build_model_with_cfg(PreActResNet, "preact_resnet18", pretrained, layers=(2, 2, 2, 2), **kwargs)
