"""What the authors' own code printed, as report figures: their JoCoR ``main.py`` logs (one per run,
named ``<method>_<symmetric|asymmetric>_<rate>_s<seed>.log``, e.g. the reference runs described in
``../shared/reference/official_jocor_mnist5k/README.md``) summarised the way the grid's runs are, and
saved as the small JSON a grid file names under ``reference_runs`` (its report then shows them beside
both ``train.fidelity`` modes, ``report_modes``).

Summaries: ``test_acc_last10``, the mean test accuracy of both networks over the last 10 printed
epochs (the grid's own figure); ``final_label_precision``, the last epoch's "Pure Ratio 1" (the clean
fraction of what network 1 kept, the project's ``label_precision``), as a fraction like the runs'.

    python -m jocor_plugin.experiments.reference_logs LOG_DIR OUT.json
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Optional

from ..core.errors import UserError

__all__ = ["read_epoch_lines", "summarise_log", "read_reference_dir", "setting_name"]

LAST_EPOCHS = 10
#: "Epoch [k/N] Test Accuracy on the 1000 test images: Model1 A % Model2 B %, Pure Ratio 1 P %, ..."
EPOCH_LINE = re.compile(r"^Epoch \[(\d+)/\d+\] Test Accuracy.*?Model1 ([\d.]+) % Model2 ([\d.]+)"
                        r"(?: %, Pure Ratio 1 ([\d.]+) %)?")
LOG_NAME = re.compile(r"^(?P<method>[a-z_]+?)_(?P<noise>symmetric|asymmetric)_(?P<rate>[\d.]+)_s(?P<seed>\d+)$")


def setting_name(noise_type: str, rate: float) -> str:
    """The grids' name of a noise setting: ``symmetric``, 0.5 -> ``sym-50``."""
    return f"{'sym' if noise_type == 'symmetric' else 'asym'}-{round(rate * 100)}"


def read_epoch_lines(text: str) -> list[tuple[int, float, float, Optional[float]]]:
    """(epoch, test accuracy of network 1, of network 2, Pure Ratio 1 or None) per printed epoch, in %."""
    rows = []
    for line in text.splitlines():
        match = EPOCH_LINE.match(line.strip())
        if match:
            epoch, acc_a, acc_b, pure = match.groups()
            rows.append((int(epoch), float(acc_a), float(acc_b), None if pure is None else float(pure)))
    return rows


def summarise_log(path: Path) -> dict[str, Any]:
    """One log's summary and per-epoch curve (see the module docstring)."""
    rows = read_epoch_lines(path.read_text(errors="replace"))
    if len(rows) < LAST_EPOCHS:
        raise UserError(f"{path}: {len(rows)} 'Epoch [k/N] Test Accuracy' line(s), need at least {LAST_EPOCHS}; "
                        f"is it a complete log of the authors' main.py?")
    last = rows[-LAST_EPOCHS:]
    pure = rows[-1][3]
    return {"summary": {"test_acc_last10": sum((a + b) / 2 for _, a, b, _ in last) / len(last),
                        "final_label_precision": None if pure is None else pure / 100},
            "epochs": [{"epoch": e, "test_acc_a": a, "test_acc_b": b, "pure_ratio": p} for e, a, b, p in rows]}


def read_reference_dir(log_dir: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """``{method: {setting: {seed: summary}}}`` for every ``*.log`` named as above in ``log_dir``."""
    runs: dict[str, dict[str, dict[str, Any]]] = {}
    logs = sorted(Path(log_dir).glob("*.log"))
    if not logs:
        raise UserError(f"{log_dir}: no *.log files; give the folder of the authors' code's logs.")
    for log in logs:
        name = LOG_NAME.match(log.stem)
        if name is None:
            raise UserError(f"{log}: name it <method>_<symmetric|asymmetric>_<rate>_s<seed>.log "
                            f"(e.g. jocor_symmetric_0.5_s1.log) so its setting and seed are known.")
        setting = setting_name(name["noise"], float(name["rate"]))
        runs.setdefault(name["method"], {}).setdefault(setting, {})[name["seed"]] = summarise_log(log)["summary"]
    return runs


def main(argv: Optional[list[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        raise SystemExit("usage: python -m jocor_plugin.experiments.reference_logs LOG_DIR OUT.json")
    log_dir, out = Path(argv[0]), Path(argv[1])
    out.write_text(json.dumps({"source": str(log_dir), "runs": read_reference_dir(log_dir)}, indent=1) + "\n")
    print(f"Wrote {out}")


if __name__ == "__main__":
    main()
