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

from ..core.errors import ModelError

__all__ = ["save_network", "load_network", "check_loaded", "is_network_folder", "class_names", "make_readable"]

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


MAX_REASON_CHARS = 600  # of a loading error's text in the one-line message (which tensor, which shapes)
MAX_LISTED = 2  # mismatched tensors named in the message; the rest are counted


def load_network(folder: str | os.PathLike) -> torch.nn.Module:
    """A network exported by a run (any timm backbone or the paper's jocor_mlp / jocor_cnn), in
    eval mode; its ``pretrained_cfg`` holds the data config and ``label_names``. Every tensor is
    the weight file's (``check_loaded``): a config.json that doesn't describe the weights is a
    one-line ``ModelError``, never a network with a freshly initialised part."""
    import timm

    from . import paper_nets  # noqa: F401  (registers jocor_mlp / jocor_cnn with timm)

    try:
        net = timm.create_model(f"local-dir:{Path(folder).resolve()}", pretrained=True)
    except Exception as err:  # an unknown architecture, a truncated file, a size mismatch, ...
        # torch lists each mismatched tensor on a line of its own: keep them, on one line
        reason = " ".join(str(err).split())[:MAX_REASON_CHARS].rstrip(".") or type(err).__name__
        raise ModelError(f"Could not load the network in {folder}: {reason}.{_classes_hint(Path(folder))}") from err
    check_loaded(net, folder)
    return net.eval()


def _shape(tensor_shape: Sequence[int]) -> str:
    return "x".join(map(str, tensor_shape)) or "scalar"


def _classes_hint(folder: Path) -> str:
    """' config.json says N classes, model.safetensors holds a classifier for M.' where they differ."""
    import json

    from safetensors import safe_open

    try:
        config = json.loads((folder / CONFIG).read_text())
        classifier = f"{config['pretrained_cfg']['classifier']}.weight"
        with safe_open(str(folder / WEIGHTS), framework="pt") as f:
            stored = f.get_slice(classifier).get_shape()[0] if classifier in f.keys() else None
    except Exception:  # nothing to add: the error itself is reported
        return ""
    said = config.get("num_classes")
    if stored is None or said == stored:
        return ""
    return (f" config.json says {said} classes, {WEIGHTS} holds a classifier for {stored}: config.json was edited "
            f"or belongs to another network; restore it (num_classes, label_names) or re-export the network.")


def check_loaded(net: torch.nn.Module, folder: str | os.PathLike) -> None:
    """Every tensor of ``net`` is the one in ``folder``'s weight file. timm builds a fresh
    classifier, with a warning in its log only, when config.json's class count differs from the
    weights' (a network that then predicts at random): refused here, naming the tensor and shapes.
    Also refused: more or fewer ``label_names`` than the network has classes."""
    from safetensors import safe_open

    folder = Path(folder)
    problems = []
    with safe_open(str(folder / WEIGHTS), framework="pt") as f:
        stored = set(f.keys())
        for name, tensor in net.state_dict().items():
            if name not in stored:
                problems.append(f"{name} is not in {WEIGHTS}")
                continue
            saved = f.get_tensor(name)
            if tuple(saved.shape) != tuple(tensor.shape):
                problems.append(f"{name} is {_shape(saved.shape)} in {WEIGHTS} but {_shape(tensor.shape)} in the "
                                f"network config.json describes")
            elif not torch.equal(saved.to(tensor.dtype), tensor):
                problems.append(f"{name} is not the one in {WEIGHTS} (timm initialised it afresh)")
    if problems:
        more = f" (and {len(problems) - MAX_LISTED} more)" if len(problems) > MAX_LISTED else ""
        raise ModelError(f"Could not load the network in {folder}: its config.json doesn't fit its weights: "
                         f"{'; '.join(problems[:MAX_LISTED])}{more}.{_classes_hint(folder)}")
    names = (getattr(net, "pretrained_cfg", None) or {}).get("label_names")
    num_classes = int(getattr(net, "num_classes", 0))
    if isinstance(names, list) and len(names) != num_classes:
        raise ModelError(f"Could not load the network in {folder}: config.json's label_names has {len(names)} "
                         f"names for the network's {num_classes} classes; give one name per class.")


def class_names(net: torch.nn.Module) -> list[str]:
    """The network's class names (``label_names`` of its config), else the class indices."""
    names = (getattr(net, "pretrained_cfg", None) or {}).get("label_names")
    num_classes = int(getattr(net, "num_classes", 0))
    if isinstance(names, dict):  # timm allows {index: name} when there are gaps
        names = [names.get(str(i), names.get(i, str(i))) for i in range(num_classes)]
    if not names or len(names) != num_classes:
        return [str(i) for i in range(num_classes)]
    return [str(n) for n in names]
