# Two commands on a fresh machine:  `make run` (main job, CPU, minutes)  and  `make test`.
# `make run`: the embedded comparison (configs/comparisons/mqar_quick.yaml): multi-query associative
# recall (zoology's MQAR, generated, no download), five layers under one budget on the CPU, two runs
# at a time, then the table, the recall figure and one sentence ranking the layers; everything under
# runs/mqar_quick/. The ListOps smoke grid is `zoo compare listops_small`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# torch 2.14.1 + torchvision 0.29.1 are the releases that lie on these machines' local disk (no
# multi-GB download); timm needs a torchvision that imports beside torch, which the CPU-only
# 2.13.0 file lacks. Override on other machines: `make TORCH_SPEC="torch torchvision" test`.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=
# two test processes, one thread each (pytest-xdist; files stay whole so module fixtures are built once):
# the 2-core CI machine is busiest that way, and torch's threads never fight each other
PYTEST_WORKERS ?= -n 2 --dist loadfile

.PHONY: run test test-slow test-gpu bench install clean

$(STAMP): setup.cfg setup.py pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/zoo compare mqar_quick

test: $(STAMP)
	$(BIN)/ruff check .
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q $(PYTEST_WORKERS) -m "not slow and not gpu" $(PYTEST_ARGS)

test-slow: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q $(PYTEST_WORKERS) -m "slow" $(PYTEST_ARGS)

test-gpu: $(STAMP)
	$(BIN)/python -m pytest -q -m "gpu" $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m pytest benchmarks -q --benchmark-enable --benchmark-only $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .benchmarks
