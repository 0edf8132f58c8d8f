"""Several processes and machines: global small-loss selection checked against one process on the
whole batch, DivideMix on two processes, and two "machines" on localhost against one machine."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from jocor_plugin.methods import create_method

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "scripts"))
from distributed_selection import Pair, global_batch  # noqa: E402


def launch_two_processes(out: Path, method: str, forget_rate: float, starved_rank: int = -1) -> dict:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--main_process_port", "0", str(ROOT / "tests" / "scripts" / "distributed_selection.py"),
           str(out), method, str(forget_rate), str(starved_rank)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def one_process(method_name: str, forget_rate: float, starved_rank: int = -1) -> tuple[list[int], list]:
    x, y = global_batch(2, starved_rank)
    method = create_method(method_name)
    method.selection = "global"  # with one process global is the plain per-batch selection
    model = Pair() if method.num_networks == 2 else Pair().net_a
    logits_a, logits_b = model(x) if method.num_networks == 2 else (model(x), None)
    out = method(logits_a, logits_b, y, forget_rate=forget_rate, epoch=0)
    out.loss.backward()
    return sorted(out.selected_a.tolist()), [p.grad.tolist() for p in model.parameters()]


@pytest.mark.parametrize("method", ["jocor", "coteaching", "standard_plus"])
def test_global_selection_on_two_processes_equals_one_process_with_the_double_batch(tmp_path, method):
    got = launch_two_processes(tmp_path / "out.json", method, forget_rate=0.5)
    kept, grads = one_process(method, forget_rate=0.5)
    assert got["world"] == 2 and got["kept_a"] == kept and len(kept) == 8
    assert len(got["grads"]) == len(grads)
    for mine, ref in zip(got["grads"], grads):  # DDP's average equals the one-process gradient
        torch.testing.assert_close(torch.tensor(mine), torch.tensor(ref), rtol=1e-5, atol=1e-6)


def test_a_rank_with_an_empty_global_selection_does_not_hang(tmp_path):
    got = launch_two_processes(tmp_path / "out.json", "jocor", forget_rate=0.5, starved_rank=1)
    kept, grads = one_process("jocor", forget_rate=0.5, starved_rank=1)
    assert got["kept_a"] == kept == list(range(8))  # everything kept lives on rank 0
    for mine, ref in zip(got["grads"], grads):
        torch.testing.assert_close(torch.tensor(mine), torch.tensor(ref), rtol=1e-5, atol=1e-6)


def test_dividemix_trains_on_two_processes_with_one_division(tmp_path):
    """The per-sample loss pass is gathered, so both processes fit the same mixture and the run's
    division (label precision) is better than the noisy labels' clean fraction."""
    out = tmp_path / "dm"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "accelerate_configs/cpu_2proc.yaml",
           "-m", "jocor_plugin.run", "recipes/demo.yaml", "data.name=digits", "method.name=dividemix",
           "method.kwargs={warmup_epochs: 1}", "train.epochs=3", "train.batch_size=64", "log.progress_bar=false",
           f"train.output_dir={out}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["num_processes"] == 2 and results["finished"]
    clean_fraction = results["epochs"][0]["label_precision"]  # the warm-up trains on every sample
    assert results["epochs"][-1]["label_precision"] > clean_fraction + 0.05


# ----------------------------------------------------------------------------- two machines on one

RUN = ["-m", "jocor_plugin.run", "recipes/demo.yaml", "data.name=digits", "train.epochs=2", "train.batch_size=64",
       "log.progress_bar=false", "train.export_models=false", "train.seed=5"]
TIMES = ("train_time_s", "epoch_time_s")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _records(out: Path) -> list[dict]:
    results = json.loads((out / "results.json").read_text())
    assert results["finished"] and results["num_processes"] == 2
    return [{k: v for k, v in r.items() if k not in TIMES} for r in results["epochs"]]


def test_two_machines_on_localhost_train_as_one_machine_with_two_processes(tmp_path):
    """Multi-node as a user tries it before renting a cluster: two launchers, each "machine" with
    one CPU process, rank 0's address 127.0.0.1 (docs/scaling.md shows the commands).
    The records equal ``cpu_2proc.yaml`` (one launcher, two processes) exactly: same ranks, same
    shards of every batch, same arithmetic."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    launch = [sys.executable, "-m", "accelerate.commands.launch"]
    nodes_out, one_out = tmp_path / "two_machines", tmp_path / "one_machine"
    port = _free_port()
    machines = [subprocess.Popen([*launch, "--multi_gpu", "--num_machines", "2", "--num_processes", "2",
                                  "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
                                  "--main_process_port", str(port), *RUN, f"train.output_dir={nodes_out}"],
                                 cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for rank in (0, 1)]
    logs = [m.communicate(timeout=300)[0] for m in machines]
    assert [m.returncode for m in machines] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    assert "Accelerate: 2 process(es)" in logs[0]  # rank 0's machine logs; the other is silent
    proc = subprocess.run([*launch, "--config_file", "accelerate_configs/cpu_2proc.yaml", *RUN,
                           f"train.output_dir={one_out}"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert _records(nodes_out) == _records(one_out)
