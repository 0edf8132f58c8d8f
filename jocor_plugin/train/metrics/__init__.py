"""`evaluate` metric modules shipped in the package, so metrics work offline."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import evaluate

__all__ = ["load_metric"]


@lru_cache(maxsize=None)
def load_metric(name: str) -> evaluate.EvaluationModule:
    """Load one of this package's metrics (``accuracy``, ``label_precision``) without the hub."""
    path = Path(__file__).parent / name / f"{name}.py"
    if not path.is_file():
        raise KeyError(f"No packaged metric '{name}'.")
    return evaluate.load(str(path), keep_in_memory=True)
