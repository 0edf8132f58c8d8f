"""Export each trained network as a timm folder (``model.safetensors`` + ``config.json``): load it
with ``timm.create_model("local-dir:<folder>")`` or ``jocor_plugin.predict``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType

from ..models.timm_folder import save_network

__all__ = ["export_models", "DATA_CONFIG_KEYS"]

DATA_CONFIG_KEYS = ("input_size", "mean", "std", "interpolation", "crop_pct")


def export_models(accelerator: Accelerator, pair: torch.nn.Module, out: Path, image_config: dict[str, Any],
                  label_names: Optional[Sequence[str]] = None) -> list[str]:
    """``out/model_a`` (and ``out/model_b``); returns the weight files. Called on every process:
    with FSDP ``get_state_dict`` gathers the sharded weights into a plain copy of each network."""
    sharded = accelerator.distributed_type == DistributedType.FSDP
    state = accelerator.get_state_dict(pair) if sharded else None
    paths = []
    if accelerator.is_main_process:
        data_config = {k: image_config[k] for k in DATA_CONFIG_KEYS}
        for name, net in zip(("net_a", "net_b"), accelerator.unwrap_model(pair).networks):
            weights = None
            if state is not None:
                weights = {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")}
                net = _plain_copy(net, image_config["input_size"][0])
            folder = out / name.replace("net_", "model_")
            paths.append(str(save_network(net, folder, data_config=data_config, weights=weights,
                                          label_names=label_names)))
    return paths


def _plain_copy(net: torch.nn.Module, in_chans: int) -> torch.nn.Module:
    """An unsharded CPU network of the same architecture, to hold the gathered weights."""
    import timm

    return timm.create_model(net.pretrained_cfg["architecture"], pretrained=False, num_classes=net.num_classes,
                             in_chans=in_chans)
