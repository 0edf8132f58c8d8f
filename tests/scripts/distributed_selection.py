"""One training step with ``method.selection=global`` on N processes (gloo on CPU).

Run by test_distributed.py under ``accelerate launch --multi_gpu --num_processes N``: every process
builds the same global batch from one seed and trains on its rank's share; the main process writes
what was kept and the DDP-averaged gradients, for comparison with one process on the whole batch.
"""
import json
import sys

import torch
from accelerate import Accelerator

from jocor_plugin.methods import create_method

GLOBAL_BATCH, FEATURES, CLASSES = 16, 5, 3


def global_batch(world: int, starved_rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same batch on every process; ``starved_rank``'s share gets huge inputs (huge losses),
    so global selection keeps none of its samples (-1: no rank starved)."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(GLOBAL_BATCH, FEATURES, generator=g), torch.randint(0, CLASSES, (GLOBAL_BATCH,), generator=g)
    if starved_rank >= 0:
        share = GLOBAL_BATCH // world
        x[starved_rank * share:(starved_rank + 1) * share] *= 100.0
    return x, y


class Pair(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net_a, self.net_b = torch.nn.Linear(FEATURES, CLASSES), torch.nn.Linear(FEATURES, CLASSES)

    def forward(self, x):
        return self.net_a(x), self.net_b(x)


def main(out_path: str, method_name: str, forget_rate: float, starved_rank: int) -> None:
    accelerator = Accelerator(cpu=True)
    rank, world = accelerator.process_index, accelerator.num_processes
    share = GLOBAL_BATCH // world
    x, y = (t[rank * share:(rank + 1) * share] for t in global_batch(world, starved_rank))
    method = create_method(method_name)
    method.selection = "global"
    model = accelerator.prepare(Pair() if method.num_networks == 2 else Pair().net_a)  # as the trainer
    logits_a, logits_b = model(x) if method.num_networks == 2 else (model(x), None)
    out = method(logits_a, logits_b, y, forget_rate=forget_rate, epoch=0)
    accelerator.backward(out.loss)
    padded = torch.full((share,), -1)  # gather needs one width on every process
    padded[:out.selected_a.numel()] = out.selected_a + rank * share
    kept = accelerator.gather(padded)
    if accelerator.is_main_process:
        grads = [p.grad.tolist() for p in accelerator.unwrap_model(model).parameters()]
        with open(out_path, "w") as f:
            json.dump({"kept_a": sorted(i for i in kept.tolist() if i >= 0), "grads": grads, "world": world}, f)
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]))
