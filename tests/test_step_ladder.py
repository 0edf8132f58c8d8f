"""benchmarks/step_ladder.py runs and prints every rung (the figures themselves are measured, in
docs/performance.md, not asserted)."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_step_ladder_prints_every_rung():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "benchmarks/step_ladder.py", "recipes/demo.yaml", "--rounds", "1"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "µs" not in line]
    assert len(rows) == 8 and rows[0].startswith("| plain loop over tensors |") and rows[0].endswith("| 1.00 |")
    assert rows[-1].startswith("| train_one_epoch + label-issue statistics |")
