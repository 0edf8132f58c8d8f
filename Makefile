# Two commands for a fresh machine (no GPU, no hub access needed):
#   make demo   set up .venv and train JoCoR on the built-in mnist5k with 50 % label noise
#   make test   set up .venv and run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch/torchvision are pinned here (not in pyproject) so any CUDA/CPU build of a user's choice works.
TORCH  ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test venv docs clean reproduce bench fashion-mnist gpu-check

$(BIN)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev]"
	# W&B's sweep engine, to validate sweeps/*.yaml as `wandb sweep` does; it pins numpy<2 but works
	# with numpy 2, so it goes in without its pins (pip reports the pin; its other deps are in [dev])
	$(BIN)/pip install -q --no-deps "sweeps==0.3.0"
	touch $@

venv: $(BIN)/.installed

# outputs/demo: results.json, curves.png, the pair as timm folders, label_issues/ (gallery.png)
demo: venv
	$(BIN)/python -m jocor_plugin.run recipes/demo.yaml train.export_label_issues=true

# The paper's Table 2 and figures on the built-in mnist5k (153 runs; rerun to resume):
# docs/results/mnist5k/report.md + PNGs, run folders in outputs/reproduce/mnist5k.
reproduce: venv
	$(BIN)/python -m jocor_plugin.reproduce recipes/grids/mnist5k.yaml --jobs 2

# Speed and scaling, measured side by side (docs/performance.md holds the numbers).
bench: venv
	$(BIN)/python benchmarks/speed.py
	$(BIN)/python benchmarks/scaling.py

# What matters on a GPU in one command (<= 10 min on one): report in outputs/gpu_check/report.md.
gpu-check: venv
	$(BIN)/python benchmarks/gpu_check.py

# one worker per core (pytest-xdist), a test module's tests on one worker (they share its fixtures)
test: venv
	WANDB_MODE=offline HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -n auto --dist loadscope tests

# Regenerate the recipe reference in docs/recipes.md from the schema (a test checks they match).
docs: venv
	$(BIN)/python -c "from pathlib import Path; from jocor_plugin.config import with_reference_table as w; \
	p = Path('docs/recipes.md'); p.write_text(w(p.read_text()))"

clean:
	rm -rf $(VENV) outputs .pytest_cache

# Full Fashion-MNIST (the paper-scale data: 60,000 + 10,000 real images) from Debian, as root.
# Without root: put the four *-ubyte.gz files in a folder and pass data.path=FOLDER.
fashion-mnist:
	apt-get update && apt-get install -y dataset-fashion-mnist
