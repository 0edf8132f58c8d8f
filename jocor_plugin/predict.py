"""Classify new images with a trained run: ``python -m jocor_plugin.predict MODEL_DIR IMAGES...``.

In the manner of timm's ``inference.py``: each network's own data config (timm's eval transform:
resize, centre crop, normalise, as it was trained), softmax probabilities, the top-k class names.

``MODEL_DIR`` is a run's ``train.output_dir`` (its ``model_a``/``model_b``: the pair's softmax is
averaged, ``--net a|b`` picks one), a run's ``best/`` folder (the best-by-validation pair), or one
network's folder (``model.safetensors`` + ``config.json``). ``IMAGES`` are files, folders (searched
recursively) or globs. Results go to stdout and, with ``--out``, to a CSV or JSON file. A file that
can't be read as an image is skipped with a warning (one bad file in hundreds should not cost the
batch), and a summary says how many; ``--strict`` stops at the first one instead. Nothing readable
at all is an error.
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch

from .core.cli import exit_code_of, make_parser
from .core.errors import DataError, ModelError, UserError
from .models.timm_folder import class_names, is_network_folder, load_network

__all__ = ["find_networks", "find_images", "predict", "write_predictions", "resolve_device", "check_output_path",
           "main"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

logger = logging.getLogger(__name__)

Images = Union[str, Path, Sequence[Union[str, Path]]]  # what predict() and the command line take


def find_networks(model_dir: str | Path, net: str = "pair") -> list[Path]:
    """The network folders in ``model_dir``: the run's pair (``net="pair"``), one of it (``a``/``b``)
    or ``model_dir`` itself when it is one network's folder."""
    root = Path(model_dir)
    if not root.is_dir():
        raise ModelError(f"MODEL_DIR {str(root)!r} is not a folder; give a run's train.output_dir, its best/ "
                         f"folder or one network's folder (model.safetensors + config.json).")
    if is_network_folder(root):
        return [root]
    found = {name: root / f"model_{name}" for name in "ab" if is_network_folder(root / f"model_{name}")}
    if not found:
        hint = (" (the run has not finished or ran with train.export_models=false)"
                if (root / "results.json").is_file() else "")
        raise ModelError(f"{str(root)!r} holds no exported network{hint}: expected model_a/ (and model_b/), "
                         f"each with model.safetensors and config.json, or a network's own folder.")
    if net == "pair":
        return list(found.values())
    if net not in found:
        raise ModelError(f"--net {net}: {str(root)!r} has no model_{net}/ (it holds "
                         f"{', '.join(f'model_{n}' for n in found)}).")
    return [found[net]]


def find_images(patterns: Images) -> list[Path]:
    """Files, folders (every image below them, sorted) and globs, in the order given (one path or
    pattern may be given alone)."""
    if isinstance(patterns, (str, Path)):
        patterns = [patterns]
    images: list[Path] = []
    for pattern in map(str, patterns):
        path = Path(pattern)
        if path.is_dir():
            images += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif path.is_file():
            images.append(path)
        elif glob.has_magic(pattern):
            matched = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
            files = [p for p in matched if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
            if not files:
                raise DataError(f"No image files match {pattern!r}.")
            images += files
        else:
            raise DataError(f"{pattern!r} is not a file, a folder or a glob that matches images.")
    if not images:
        raise DataError(f"No images found in {', '.join(map(repr, patterns))} "
                        f"(looked for {', '.join(IMAGE_SUFFIXES)}).")
    return images


def _transform(net: torch.nn.Module) -> tuple[Any, str]:
    """timm's eval transform from the network's own data config, and the PIL mode it expects."""
    from timm.data import create_transform, resolve_data_config

    config = resolve_data_config({}, model=net)
    return create_transform(**config, is_training=False), "L" if config["input_size"][0] == 1 else "RGB"


def _load_image(path: Path, mode: str) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert(mode)
    except UnidentifiedImageError:
        raise DataError(f"Cannot read the image {str(path)!r}: not an image format PIL knows.") from None
    except Image.DecompressionBombError as err:  # PIL refuses images over 2 x Image.MAX_IMAGE_PIXELS
        raise DataError(f"Cannot read the image {str(path)!r}: {err} Downscale it first (the networks see "
                        f"small inputs).") from None
    except OSError as err:
        raise DataError(f"Cannot read the image {str(path)!r}: {err.strerror or err}.") from None


def resolve_device(device: Optional[str]) -> torch.device:
    """``--device``: the default (cuda if available, else cpu), or one torch knows and this
    machine has."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise UserError(f"--device {device!r} is not a device torch knows; use cpu, cuda, cuda:N or mps "
                        f"(default: cuda if available, else cpu).") from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"--device {device}: no CUDA GPU is available here; use --device cpu (or leave it out).")
        if resolved.index is not None and resolved.index >= count:
            raise UserError(f"--device {device}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}.")
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {device}: Apple's MPS is not available here; use --device cpu.")
    elif resolved.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device {device}: use cpu, cuda, cuda:N or mps.")
    return resolved


def check_output_path(path: str | Path) -> Path:
    """``--out``: a .csv or .json file whose folder exists or can be made (checked before predicting,
    so a bad path costs no work)."""
    path = Path(path)
    if path.suffix.lower() not in (".csv", ".json"):
        raise UserError(f"--out {str(path)!r}: give a .csv or .json file name.")
    if path.is_dir():
        raise UserError(f"--out {str(path)!r} is a folder; give a file name in it, e.g. "
                        f"{str(path / 'predictions.csv')!r}.")
    for parent in path.parents:  # the nearest existing ancestor must be a folder
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"--out {str(path)!r}: {str(parent)!r} is a file, not a folder; choose another path.")
            break
    return path


@torch.no_grad()
def predict(model_dir: str | Path, images: Images, *, topk: int = 5, net: str = "pair",
            batch_size: int = 64, device: Optional[str] = None, strict: bool = False,
            on_skip: Optional[Callable[[Path, str], None]] = None) -> list[dict[str, Any]]:
    """One row per image: ``image`` and the ``topk`` classes as ``[{"index", "label", "prob"}]``,
    from the softmax of one network or the mean softmax of the pair.

    ``images`` takes what the command line takes: files, folders (searched recursively), globs, or a
    list of them. A file that can't be read as an image is left out: ``on_skip(path, why)`` is
    called for it (default: a warning through logging); ``strict=True`` raises its ``DataError``
    instead. When no image at all can be read, the first one's error is raised."""
    device = resolve_device(device)
    networks = [load_network(folder).to(device) for folder in find_networks(model_dir, net)]
    names = class_names(networks[0])
    if any(class_names(n) != names for n in networks[1:]):
        raise ModelError(f"The networks in {model_dir} have different classes; pick one with --net a|b.")
    transforms = [_transform(n) for n in networks]
    k = max(1, min(topk, len(names)))
    rows: list[dict[str, Any]] = []
    paths = find_images(images)
    skipped: list[tuple[Path, DataError]] = []
    for start in range(0, len(paths), batch_size):
        chunk, inputs = [], []
        for path in paths[start:start + batch_size]:
            try:  # each network's input for this file; one that doesn't decode leaves the batch, not the run
                inputs.append([transform(_load_image(path, mode)) for transform, mode in transforms])
            except DataError as err:
                if strict:
                    raise
                skipped.append((path, err))
                continue
            chunk.append(path)
        if not chunk:
            continue
        probs = 0
        for i, network in enumerate(networks):
            x = torch.stack([per_net[i] for per_net in inputs]).to(device)
            probs = probs + network(x).float().softmax(1)
        top = (probs / len(networks)).topk(k, dim=1)
        for path, values, indices in zip(chunk, top.values.tolist(), top.indices.tolist()):
            rows.append({"image": str(path), "topk": [{"index": i, "label": names[i], "prob": p}
                                                      for i, p in zip(indices, values)]})
    if not rows and skipped:  # nothing to show for it: an error, not an empty result
        first = str(skipped[0][1])
        raise DataError(first if len(skipped) == 1 else f"None of the {len(skipped)} images could be read; the "
                        f"first: {first}")
    for path, err in skipped:
        (on_skip or _warn_skipped)(path, str(err))
    return rows


def _warn_skipped(path: Path, why: str) -> None:
    logger.warning("Skipped %s: %s", path, why)


def write_predictions(rows: Sequence[dict[str, Any]], path: str | Path) -> None:
    """``.json``: the rows as they are; ``.csv``: one line per image, ``top{i}_label``,
    ``top{i}_index`` and ``top{i}_prob`` for i = 1..k."""
    path = check_output_path(path)
    try:
        _write(rows, path)
    except OSError as err:  # e.g. a read-only folder, a full disk
        raise UserError(f"--out {str(path)!r} can't be written: {err.strerror or err}.") from None


def _write(rows: Sequence[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(list(rows), indent=2))
        return
    k = max((len(r["topk"]) for r in rows), default=0)
    fields = ["image"] + [f"top{i}_{what}" for i in range(1, k + 1) for what in ("label", "index", "prob")]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            flat = {"image": row["image"]}
            for i, hit in enumerate(row["topk"], 1):
                flat.update({f"top{i}_label": hit["label"], f"top{i}_index": hit["index"],
                             f"top{i}_prob": f"{hit['prob']:.6f}"})
            writer.writerow(flat)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = make_parser(
        "predict", "Classify images with a trained run's networks (the pair's softmax averaged).",
        "Example: python -m jocor_plugin.predict outputs/mnist5k_sym50_jocor digits/ --topk 3 --out predictions.csv. "
        "Files that can't be read as images are skipped with a warning each and a summary (--strict: stop).")
    parser.add_argument("model_dir", help="a run's train.output_dir, its best/ folder, or one network's folder")
    parser.add_argument("images", nargs="+", help="image files, folders (recursive) or globs ('data/**/*.png')")
    parser.add_argument("--topk", type=int, default=5, help="classes to report per image (default 5)")
    parser.add_argument("--net", choices=["pair", "a", "b"], default="pair",
                        help="'pair': mean softmax of model_a and model_b (default); 'a' or 'b': one network")
    parser.add_argument("--out", help="also write the predictions to FILE.csv or FILE.json")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first file that can't be read as an image (default: skip such files "
                             "with a warning line each and a summary; none readable at all is an error)")
    return parser.parse_args(argv)


def _predict_command(args: argparse.Namespace) -> int:
    if args.topk < 1 or args.batch_size < 1:
        raise UserError("--topk and --batch-size must be >= 1.")
    if args.out:
        check_output_path(args.out)
    resolve_device(args.device)
    folders = find_networks(args.model_dir, args.net)
    images = find_images(args.images)
    what = " + ".join(f.name for f in folders) + (" (softmax averaged)" if len(folders) > 1 else "")
    print(f"Predicting {len(images)} image(s) with {what} from {args.model_dir}.", file=sys.stderr)
    if (Path(args.model_dir) / "best").is_dir():
        print(f"(These are the last epoch's networks; {Path(args.model_dir) / 'best'} holds the "
              f"best-by-validation pair.)", file=sys.stderr)
    skipped: list[tuple[Path, str]] = []
    rows = predict(args.model_dir, images, topk=args.topk, net=args.net, batch_size=args.batch_size,
                   device=args.device, strict=args.strict, on_skip=lambda path, why: skipped.append((path, why)))
    for row in rows:
        print(row["image"] + "  " + "  ".join(f"{hit['label']} {hit['prob']:.3f}" for hit in row["topk"]))
    for path, why in skipped:
        print(f"warning: skipped {path}: {why}", file=sys.stderr)
    if skipped:
        print(f"Skipped {len(skipped)} of {len(images)} file(s) that can't be read as images (listed above); "
              f"predicted {len(rows)}. --strict stops at the first one instead.", file=sys.stderr)
    if args.out:
        write_predictions(rows, args.out)
        print(f"Predictions written to {args.out}.", file=sys.stderr)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    return exit_code_of(lambda: _predict_command(args))

if __name__ == "__main__":
    sys.exit(main())
