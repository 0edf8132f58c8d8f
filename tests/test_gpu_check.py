"""`make gpu-check` (benchmarks/gpu_check.py): without a GPU one line and a non-zero exit; its report
table and its reading of speed.py's output, on made-up results. The GPU checks themselves need a GPU."""
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


gpu_check = load_gpu_check()
Check = gpu_check.Check


def test_without_a_gpu_it_says_so_in_one_line_and_exits_non_zero(tmp_path):
    # CUDA_VISIBLE_DEVICES="" hides any GPU, so this holds on a GPU machine too (inside `make gpu-check`)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "gpu_check")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == gpu_check.NO_GPU_EXIT != 0
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [gpu_check.NO_GPU_MESSAGE]
    assert "GPU" in proc.stderr and "CUDA" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "gpu_check").exists()  # nothing run, nothing written


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_gpu_check_runs_the_script_after_the_venv():
    # --no-print-directory: under `make test` this is a nested make, which would announce its folder
    dry = subprocess.run(["make", "-n", "--no-print-directory", "gpu-check"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[-1].endswith("python benchmarks/gpu_check.py")
    makefile = (ROOT / "Makefile").read_text()
    assert "gpu-check: venv" in makefile and "gpu-check" in makefile.split(".PHONY:")[1].splitlines()[0]


def test_the_report_is_a_markdown_table_with_each_check_its_result_and_figure(tmp_path):
    checks = [Check("jocor_cnn at CIFAR size trains", gpu_check.PASS, "loss 2.3 -> 0.4, 3.1 ms/step"),
              Check("bf16 run vs fp32 run", gpu_check.FAIL, "70.1 vs 80.2 % (-10.1 points | bound 5)"),
              Check("speed: JoCoR / Standard epoch", gpu_check.MET, "1.40 (target <= 2)"),
              Check("speed: compiled / eager", gpu_check.FIGURE, "0.90")]
    text = gpu_check.write_report(tmp_path / "out" / "report.md", checks, "NVIDIA H200, torch 2.14.1", "details")
    assert (tmp_path / "out" / "report.md").read_text() == text
    lines = text.splitlines()
    start = lines.index("| check | result | figure |")
    assert lines[start + 1] == "|---|---|---|"
    rows = lines[start + 2:start + 2 + len(checks)]
    assert rows[0] == "| jocor_cnn at CIFAR size trains | pass | loss 2.3 -> 0.4, 3.1 ms/step |"
    assert rows[1] == "| bf16 run vs fp32 run | **FAIL** | 70.1 vs 80.2 % (-10.1 points / bound 5) |"  # no stray column
    assert all(row.count("|") == 4 for row in rows)
    assert "NVIDIA H200, torch 2.14.1" in text and text.rstrip().endswith("details")
    assert "Failed: 1 of 4." in text


def test_an_empty_report_says_no_check_ran():
    assert "No check has run." in gpu_check.report_markdown([])


SPEED_OUTPUT = """# benchmarks/speed.py on NVIDIA H200, torch 2.14.1, batch 128, wall clock

## Step time, JoCoR / standard

| backbone | standard (ms) | jocor (ms) | ratio |
|---|---|---|---|
| jocor_mlp | 0.50 | 0.90 | 1.80x |
| jocor_cnn | 2.00 | 2.80 | 1.40x |

## Pair forward+backward: two sequential passes vs one vmapped pass

| backbone | sequential (ms) | vmapped (ms) | vmapped / sequential |
|---|---|---|---|
| jocor_mlp | 1.00 | 0.50 | 0.50x |

## Ratios

| ratio | measured | target | met |
|---|---|---|---|
| mnist5k: jocor epoch, jocor_plugin / plain | 1.10 | <= 1.15 | yes |
| mnist5k: JoCoR / Standard epoch (jocor_plugin) | 2.30 | <= 2 | **no** |
| mnist5k: JoCoR epoch, compiled / eager | 0.80 |  |  |
"""


def test_speed_output_becomes_rows_step_ratios_against_the_gpu_target():
    rows = {c.name: c for c in gpu_check.speed_checks(SPEED_OUTPUT)}
    assert list(rows) == ["speed: step time JoCoR / standard, jocor_mlp",
                          "speed: step time JoCoR / standard, jocor_cnn",
                          "speed: mnist5k: jocor epoch, jocor_plugin / plain",
                          "speed: mnist5k: JoCoR / Standard epoch (jocor_plugin)",
                          "speed: mnist5k: JoCoR epoch, compiled / eager"]  # the vmap table is not a step ratio
    assert rows["speed: step time JoCoR / standard, jocor_mlp"].result == gpu_check.NOT_MET  # 1.8 > 1.5
    assert rows["speed: step time JoCoR / standard, jocor_cnn"].result == gpu_check.MET
    assert rows["speed: mnist5k: jocor epoch, jocor_plugin / plain"].result == gpu_check.MET
    assert rows["speed: mnist5k: JoCoR / Standard epoch (jocor_plugin)"].result == gpu_check.NOT_MET
    assert rows["speed: mnist5k: JoCoR epoch, compiled / eager"].result == gpu_check.FIGURE
    assert rows["speed: mnist5k: jocor epoch, jocor_plugin / plain"].figure == "1.10 (target <= 1.15)"
    # a missed speed target is a finding, not a failure of the check
    assert all(c.result != gpu_check.FAIL for c in rows.values())


def test_speed_output_of_a_crashed_run_gives_no_rows():
    assert gpu_check.speed_checks("Traceback (most recent call last):\n  ...\nRuntimeError: CUDA error") == []


def test_the_cpu_bound_tests_it_leaves_out_exist_and_two_process_tests_need_two_gpus():
    assert "tests/test_distributed.py" in gpu_check.ignored_tests(gpus=1)
    assert "tests/test_distributed.py" not in gpu_check.ignored_tests(gpus=2)
    for path in gpu_check.ignored_tests(gpus=1):
        assert (ROOT / path).is_file(), path


def test_the_runs_cover_every_single_gpu_config_and_the_speed_parts_exist():
    configs = sorted(p.name for p in (ROOT / "accelerate_configs").glob("single_gpu*.yaml"))
    assert {"single_gpu.yaml", "single_gpu_bf16.yaml"} <= set(configs)  # the bf16-vs-fp32 comparison needs both
    speed = (ROOT / "benchmarks" / "speed.py").read_text()
    parts = gpu_check.SPEED_ARGS[gpu_check.SPEED_ARGS.index("--parts") + 1:]
    parts = parts[:next((i for i, a in enumerate(parts) if a.startswith("--")), len(parts))]
    assert parts and all(f'"{part}"' in speed for part in parts)
    for flag in (a for a in gpu_check.SPEED_ARGS if a.startswith("--")):
        assert f'"{flag}"' in speed, flag


@pytest.mark.parametrize("line, counts", [
    ("3 failed, 250 passed, 2 skipped, 5 warnings in 95.30s", "3 failed, 250 passed, 2 skipped, 5 warnings"),
    ("==== 20 passed in 12.01s (0:00:12) ====", "20 passed")])
def test_the_pytest_summary_line_is_read(line, counts):
    assert gpu_check.PYTEST_SUMMARY.findall(f"....\n{line}\n")[-1][0] == counts
