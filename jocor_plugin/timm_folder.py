"""One network as a timm folder (``model.safetensors`` + ``config.json``), as a run exports it and
``predict`` reads it back.

``config.json`` is timm's own (``timm.models.save_for_hf``): the architecture, its arguments, the data
config the network was trained with and, as timm's hub configs do, the class names
(``label_names``), so ``timm.create_model("local-dir:FOLDER")`` restores all of it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from .errors import ModelError

__all__ = ["save_network", "load_network", "is_network_folder", "class_names", "make_readable"]

WEIGHTS, CONFIG = "model.safetensors", "config.json"


def make_readable(path: str | os.PathLike) -> None:
    """Give ``path`` the permissions any other output gets (safetensors writes 0600): 0666 less
    the process's umask."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def save_network(net: torch.nn.Module, folder: str | os.PathLike, *, data_config: dict[str, Any],
                 weights: Optional[dict[str, torch.Tensor]] = None,
                 label_names: Optional[Sequence[str]] = None) -> Path:
    """Write ``net`` as a timm folder with timm's public ``save_for_hf``; returns the weight file.
    ``weights`` (e.g. gathered from FSDP shards) are loaded into ``net`` first, so ``net`` must
    be a plain module (not sharded)."""
    from timm.models import save_for_hf

    folder = Path(folder)
    if weights is not None:
        net.load_state_dict(weights)
    model_config = {"label_names": list(label_names)} if label_names else None
    save_for_hf(net, str(folder), model_config=model_config, data_config=data_config, safe_serialization=True)
    make_readable(folder / WEIGHTS)
    return folder / WEIGHTS


def is_network_folder(folder: str | os.PathLike) -> bool:
    return (Path(folder) / CONFIG).is_file() and (Path(folder) / WEIGHTS).is_file()


def load_network(folder: str | os.PathLike) -> torch.nn.Module:
    """A network exported by a run (any timm backbone or the paper's jocor_mlp / jocor_cnn), in
    eval mode; its ``pretrained_cfg`` holds the data config and ``label_names``."""
    import timm

    from . import models  # noqa: F401  (registers jocor_mlp / jocor_cnn with timm)

    try:
        net = timm.create_model(f"local-dir:{Path(folder).resolve()}", pretrained=True)
    except Exception as err:  # an unknown architecture, a truncated file, ...
        reason = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise ModelError(f"Could not load the network in {folder}: {reason}.") from err
    return net.eval()


def class_names(net: torch.nn.Module) -> list[str]:
    """The network's class names (``label_names`` of its config), else the class indices."""
    names = (getattr(net, "pretrained_cfg", None) or {}).get("label_names")
    num_classes = int(getattr(net, "num_classes", 0))
    if isinstance(names, dict):  # timm allows {index: name} when there are gaps
        names = [names.get(str(i), names.get(i, str(i))) for i in range(num_classes)]
    if not names or len(names) != num_classes:
        return [str(i) for i in range(num_classes)]
    return [str(n) for n in names]
