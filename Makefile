# forewarn: `make demo` runs the product, `make test` runs every test. Both set themselves up.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Everything: the serving base, the `train` extra (torch, onnx, scikit-learn, matplotlib) and the
# dev tools. A gateway that only serves installs `pip install .` without torch (docs/runtimes.md).
# Pinned: an unpinned torch pulls a multi-GB CUDA build. Where a pip index or wheel cache
# offers the CPU build (as on forewarn's CI machines), this pin takes it. On another machine
# without a GPU, add the CPU wheel index: make demo TORCH_PIP_ARGS="--index-url <cpu index>"
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
ARGS ?=

.PHONY: help install demo test test-unit test-integration lint format system-deps train bench clean

help:
	@echo "make demo      run simulator + agent on an embedded broker (ARGS=\"--duration 60\")"
	@echo "make test      run the whole test suite (installs mosquitto, prometheus, amtool, docker-compose if missing)"
	@echo "make lint      ruff (lint + format check), mypy and the import layers (lint-imports)"
	@echo "make train     retrain every shipped model: the default LSTM (models/default.pt) and models/shipped/{rnn,gru,bilstm,ridge}.pt"
	@echo "make bench     forecast path, end to end through mosquitto, memory, py-spy profile, a live model swap, recording (~18 min; ARGS=--json)"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "forewarn needs Python 3.11 or newer; set PYTHON=python3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { echo "cannot create a virtualenv: run 'sudo apt-get install -y python3-venv'"; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e '.[dev,train]'
	@touch $(STAMP)

install: $(STAMP)

system-deps:
	@scripts/ensure-system-deps.sh

demo: $(STAMP)
	$(BIN)/forewarn demo $(ARGS)

test: $(STAMP) system-deps
	$(BIN)/python -m pytest $(ARGS)

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(ARGS)

test-integration: $(STAMP) system-deps
	$(BIN)/python -m pytest tests/integration $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The default (the LSTM the agent serves), then the other kinds `forewarn evaluate --compare`
# measures, all with the same recipe and seed (docs/model.md). Each writes its .pt and serving
# file (.json, .npz, .onnx). SHIPPED_KINDS="rnn" retrains fewer; ARGS go to every run.
SHIPPED_KINDS ?= rnn gru bilstm ridge
train: $(STAMP)
	$(BIN)/forewarn train --output models/default.pt $(ARGS)
	for kind in $(SHIPPED_KINDS); do \
		$(BIN)/forewarn train --kind $$kind --output models/shipped/$$kind.pt $(ARGS) || exit 1; \
	done

# Tables by default; ARGS=--json makes each benchmark print one JSON object (one per line).
# E2E_ARGS go to bench.e2e only, e.g. E2E_ARGS="--no-profile --latency-seconds 10".
E2E_ARGS ?=
# ANOMALY_ARGS go to bench.anomaly only, e.g. ANOMALY_ARGS="--nab-python /path/with/pandas/python".
ANOMALY_ARGS ?=
# SWAP_ARGS go to bench.swap, RECORDING_ARGS to bench.recording: both run 5,000 machines at
# 1 Hz through mosquitto by default (about 1.5 and 3 minutes on a 2-core machine), e.g.
# SWAP_ARGS="--machines 1000" RECORDING_ARGS="--rounds 3".
SWAP_ARGS ?=
RECORDING_ARGS ?=
bench: $(STAMP) system-deps
	@test -x $(BIN)/py-spy || $(BIN)/python -m pip install --quiet py-spy
	$(BIN)/python -m bench.inference $(ARGS)
	$(BIN)/python -m bench.decode $(ARGS)
	$(BIN)/python -m bench.startup $(ARGS)
	$(BIN)/python -m bench.e2e $(ARGS) $(E2E_ARGS)
	$(BIN)/python -m bench.anomaly $(ARGS) $(ANOMALY_ARGS)
	$(BIN)/python -m bench.swap $(ARGS) $(SWAP_ARGS)
	$(BIN)/python -m bench.recording $(ARGS) $(RECORDING_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
