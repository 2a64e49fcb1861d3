# Two commands on a fresh machine:  `make run` (main job, CPU, minutes)  and  `make test`.
# `make run`: train the embedded ListOps smoke experiment (generated data, no download), then
# compare every registered layer side by side; results under runs/.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# torch 2.14.1 + torchvision 0.29.1 are the releases that lie on these machines' local disk (no
# multi-GB download); timm needs a torchvision that imports beside torch, which the CPU-only
# 2.13.0 file lacks. Override on other machines: `make TORCH_SPEC="torch torchvision" test`.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: run test test-slow test-gpu bench install clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/zoo train listops_small --out runs
	$(BIN)/zoo bench --quick --out runs/bench

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not gpu" $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow" $(PYTEST_ARGS)

test-gpu: $(STAMP)
	$(BIN)/python -m pytest -q -m "gpu" $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m pytest benchmarks -q --benchmark-enable --benchmark-only $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .benchmarks
