"""``PairNet``: two instances of any timm backbone trained as one module, and the factory that
builds them with errors that say what to fix (unknown name, missing weights, wrong input size)."""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Optional

import timm
import torch
import torch.nn as nn

from ..core.errors import ModelError, did_you_mean
from . import paper_nets

__all__ = ["PairNet", "create_pair", "create_backbone", "check_forward"]


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


SOURCE_PREFIXES = ("hf-hub:", "local-dir:")  # timm model names that carry where the model comes from


def create_backbone(name: str, *, num_classes: int, in_chans: int, pretrained: bool = False,
                    pretrained_file: Optional[str] = None, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` with errors that say what to fix (unknown name, missing weights)."""
    # hf-hub:org/repo and local-dir:/path name their own source: timm resolves (or refuses) them itself
    if not name.startswith(SOURCE_PREFIXES) and not timm.is_model(name):
        hint = did_you_mean(name, timm.list_models(), n=3)
        raise ModelError(f"model.name={name!r} is not a timm model.{hint} "
                         f"List them with: python -c \"import timm; print(timm.list_models('*{name[:4]}*'))\"")
    _check_kwargs(name, num_classes, in_chans, kwargs)
    if pretrained_file is not None:
        if not Path(pretrained_file).is_file():
            raise ModelError(f"model.pretrained_file={pretrained_file!r} does not exist; give the path "
                             f"of a .safetensors/.pth weight file for {name}.")
        with torch.random.fork_rng(devices=[]):  # a probe: the network's initial weights stay as they were
            probe = timm.create_model(name, num_classes=num_classes, in_chans=in_chans, **kwargs)
        _check_weight_keys(name, pretrained_file, probe)
        kwargs["pretrained_cfg_overlay"] = dict(file=str(pretrained_file))
        pretrained = True
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes,
                                 in_chans=in_chans, **kwargs)
    except TypeError as err:
        raise ModelError(f"timm.create_model({name!r}) rejected an argument: {err}. Check model.kwargs.") from err
    except Exception as err:  # offline hub, corrupt file, weights of another architecture, ...
        reason = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
        if name.startswith(SOURCE_PREFIXES):
            raise ModelError(f"model.name={name!r}: timm could not load it ({reason}). A local-dir: folder needs "
                             f"the config.json and weights of a timm model (as an exported network has); an hf-hub: "
                             f"name needs the Hub, or its files downloaded elsewhere and given as local-dir:PATH.") from err
        if not pretrained:
            raise
        if pretrained_file:
            raise ModelError(f"Could not load pretrained weights for {name} from {pretrained_file}: {reason}. "
                             f"Give a .safetensors (or weights-only .pth) file of {name}'s weights; or set "
                             f"model.pretrained=false.") from err
        raise ModelError(f"Could not load pretrained weights for {name} from the Hugging Face Hub: {reason}. "
                         f"Offline? Download the weights elsewhere and set model.pretrained_file=PATH; or set "
                         f"model.pretrained=false.") from err


# keyword arguments timm's builder takes itself (build_model_with_cfg), whatever the model class
_BUILDER_KWARGS = {"pretrained_cfg", "pretrained_cfg_overlay", "pretrained_strict", "features_only",
                   "feature_cfg", "out_indices", "output_stride", "feature_cls", "cache_dir", "checkpoint_path"}


def _check_kwargs(name: str, num_classes: int, in_chans: int, kwargs: dict[str, Any]) -> None:
    """model.kwargs the backbone doesn't take: one line with the close ones (a class that swallows
    ``**kwargs``, as the paper's networks do, would otherwise ignore a misspelt key silently)."""
    if not kwargs:
        return
    try:
        with torch.random.fork_rng(devices=[]):  # a probe: the network's initial weights stay as they were
            cls = type(timm.create_model(name, num_classes=num_classes, in_chans=in_chans))
    except Exception:  # the real call below reports it
        return
    params = inspect.signature(cls.__init__).parameters
    swallows = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if swallows and cls.__module__ != paper_nets.__name__:
        return  # a timm class passing **kwargs on to its blocks: they check
    accepted = [k for k in params if k != "self" and params[k].kind is not inspect.Parameter.VAR_KEYWORD]
    unknown = [k for k in kwargs if k not in accepted and k not in _BUILDER_KWARGS]
    if unknown:
        hint = " ".join(did_you_mean(k, accepted, n=2).strip() or "" for k in unknown).strip()
        raise ModelError(f"model.kwargs: {name} takes no argument {', '.join(map(repr, unknown))}."
                         f"{' ' + hint if hint else ''} It takes: {', '.join(accepted)}.")


def _state_dict_keys(path: str) -> Optional[set[str]]:
    """The tensor names of a weight file (unwrapped as timm unwraps them), or None if unreadable."""
    try:
        if path.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(path, framework="pt") as f:
                keys = set(f.keys())
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            for wrapper in ("state_dict_ema", "model_ema", "state_dict", "model"):
                if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
                    state = state[wrapper]
                    break
            keys = set(state) if isinstance(state, dict) else None
    except Exception:  # timm's own load reports a corrupt or pickled file
        return None
    return {k[len("module."):] if k.startswith("module.") else k for k in keys} if keys is not None else None


def _check_weight_keys(name: str, path: str, model: nn.Module) -> None:
    """Weights of another architecture: timm loads non-strictly when the classifier is replaced and
    only warns; refuse when most of the backbone's tensors are not in the file."""
    keys = _state_dict_keys(path)
    if keys is None:
        return
    wanted = set(model.state_dict())
    matched = len(wanted & keys)
    if matched * 2 < len(wanted) or len(keys - wanted) * 2 > len(keys):  # most missing, or most unexpected
        missing = sorted(wanted - keys)[:2]
        unexpected = sorted(keys - wanted)[:2]
        raise ModelError(f"model.pretrained_file={path!r} doesn't hold {name}'s weights: {matched} of its "
                         f"{len(wanted)} tensors are in the file (missing e.g. {', '.join(missing)}; "
                         f"unexpected e.g. {', '.join(unexpected) or 'none'}). Give a weight file of {name}, or "
                         f"set model.name to the architecture the file is for.")


def check_forward(net: nn.Module, name: str, input_size: tuple[int, int, int], num_classes: int,
                  data_config: Optional[dict[str, Any]] = None) -> None:
    """One sample of the data's shape through the network, before training: input channels or a size
    the backbone can't take fail here with one line, not at the first step (or at export, whose
    check of ``data_config`` against the model is made here too)."""
    if data_config is not None:
        from timm.data import resolve_input_data_config

        try:
            resolve_input_data_config(net, args=data_config, pretrained_cfg=dict(net.pretrained_cfg))
        except ValueError as err:
            raise ModelError(f"model.name={name} can't take the data's {input_size[0]}x{input_size[1]}x"
                             f"{input_size[2]} inputs ({err}). Set data.input_size (and model.in_chans) to what "
                             f"it takes, or model.kwargs={{img_size: {input_size[1]}}} where the backbone has "
                             f"one.") from None
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            out = net(torch.zeros(1, *input_size, device=next(net.parameters()).device))
    except Exception as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        fixed = getattr(getattr(net, "patch_embed", None), "img_size", None)
        sized = "img_size" in inspect.signature(type(net).__init__).parameters  # e.g. jocor_mlp, jocor_cnn
        if fixed is not None and tuple(fixed) != tuple(input_size[1:]):
            hint = (f" {name} takes {fixed[0]}x{fixed[1]} inputs: set data.input_size={fixed[0]}, or "
                    f"model.kwargs={{img_size: {input_size[1]}}} to build it for {input_size[1]}x{input_size[2]}.")
        elif sized and input_size[1] == input_size[2]:
            hint = (f" Build it for the data with model.kwargs={{img_size: {input_size[1]}}} (and model.in_chans), "
                    f"or set data.input_size to the size it was built for.")
        else:
            hint = (" Set data.input_size (and model.in_chans) to what the backbone takes, or choose another "
                    "model.name (jocor_mlp: 28x28 grey, jocor_cnn: 32x32; timm's CNNs take most sizes).")
        raise ModelError(f"model.name={name} can't take the data's {input_size[0]}x{input_size[1]}x{input_size[2]} "
                         f"inputs ({reason}).{hint}") from None
    finally:
        net.train(was_training)
    if out.shape[-1] != num_classes:
        raise ModelError(f"model.name={name} gives {out.shape[-1]} outputs, not the {num_classes} classes; check "
                         f"model.kwargs (num_classes is set by the recipe).")


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
