"""check_config(cfg): every setting a user can get wrong, refused up front with one message naming the fix,
before W&B starts, a model loads or any time is spent.

Each check reuses the code that later builds the object (PEFT's LoraConfig, TRL's GRPOConfig, the
benchmarks, the reward functions), so that a check and its use cannot disagree.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile

from omegaconf import DictConfig, open_dict

from .errors import UserError
from .generation.sampling import benchmarks_from_config, resolve_backend
from .infra.hardware import Hardware, cuda_diagnosis
from .planning.search import check_search
from .policy.adapters import effective_learning_rate, evaluated_rank, lora_config, vllm_max_lora_rank
from .run.milestones import check_milestones
from .tasks.data import check_local_path
from .training.rewards import check_reward_names
from .training.trainer import grpo_config


def check_config(cfg: DictConfig, hardware: Hardware, plan_only: bool = False) -> None:
    """Every check; `plan_only` (dry_run: nothing is trained here) skips what only the machine that trains
    needs, such as an installed vLLM."""
    check_gpu_settings(cfg, hardware, plan_only)
    check_budget(cfg.budget)
    check_trainer_numbers(cfg.trainer)
    check_milestones(cfg.budget, cfg.trainer)
    check_search(cfg.get("search"), cfg.eval)
    lora_config(cfg.lora)
    check_reward_names(cfg.reward)
    with tempfile.TemporaryDirectory() as scratch:
        grpo_config(  # a plan checks fields and values only: TRL would refuse bf16 on this machine's CPU
            _without_precision(cfg.trainer) if plan_only else cfg.trainer,
            cfg.generation,
            learning_rate=effective_learning_rate(cfg.lora, cfg.trainer.learning_rate),  # refuses a bad lr_rule
            max_steps=cfg.budget.max_steps,
            output_dir=scratch,
            hardware=Hardware("cpu", "cpu", 1) if plan_only else hardware,
            run_name="check",
            reward_weights=list(cfg.reward.weights.values()),
        )
    check_sampling(cfg.eval.sampling, "eval.sampling")
    check_context(cfg)
    check_data(cfg.data)


def _without_precision(trainer_cfg: DictConfig) -> DictConfig:
    copy = trainer_cfg.copy()
    with open_dict(copy):
        copy.bf16, copy.fp16 = False, False
    return copy


def number(node: DictConfig, name: str, key: str, cast=float):
    """node[key] as a number (None stays None), or one line naming the setting `name.key` and what it holds."""
    value = node.get(key)
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise ValueError(value)
        found = float(value)
        if cast is int and found != int(found):
            raise ValueError(value)
        return int(found) if cast is int else found
    except (TypeError, ValueError, OverflowError):
        kind = "a whole number" if cast is int else "a number"
        raise UserError(f"{name}.{key}={value}: give {kind}.") from None


def check_budget(budget_cfg: DictConfig) -> None:
    minutes = number(budget_cfg, "budget", "minutes")
    if minutes is None or minutes <= 0:
        raise UserError(f"budget.minutes={budget_cfg.minutes}: give the training time in minutes (more than 0).")
    number(budget_cfg, "budget", "price_per_hour")
    for key in ("max_steps", "max_generated_tokens"):
        limit = number(budget_cfg, "budget", key, int)
        if limit is not None and limit < 1:
            raise UserError(f"budget.{key}={budget_cfg[key]}: give a positive limit, or null for none.")


def check_trainer_numbers(trainer_cfg: DictConfig) -> None:
    """Numbers the optimizer or the generator would otherwise refuse with a long traceback (or, for a
    completion length the benchmarks inherit, under another key's name)."""
    rate = number(trainer_cfg, "trainer", "learning_rate")
    if rate is None or rate <= 0:
        raise UserError(
            f"trainer.learning_rate={trainer_cfg.get('learning_rate')}: give a positive learning rate, e.g. "
            "trainer.learning_rate=1e-5."
        )
    for key in ("max_completion_length", "num_generations", "per_device_train_batch_size"):
        value = number(trainer_cfg, "trainer", key, int)
        if value is not None and value < 1:
            raise UserError(f"trainer.{key}={value}: give at least 1.")
    temperature = number(trainer_cfg, "trainer", "temperature")
    if temperature is not None and temperature <= 0:
        raise UserError(
            f"trainer.temperature={temperature}: GRPO samples several completions per prompt and transformers "
            "refuses sampling at 0; give a temperature above 0 (the study's is 0.7)."
        )
    check_sampling(trainer_cfg, "trainer")


def check_sampling(node: DictConfig, name: str) -> None:
    """Sampling settings transformers' and vLLM's generation refuse (late, in a long traceback)."""
    top_p = number(node, name, "top_p")
    if top_p is not None and not 0 < top_p <= 1:
        raise UserError(f"{name}.top_p={top_p}: give a probability in (0, 1] (1 keeps every token).")
    top_k = number(node, name, "top_k", int)
    if top_k is not None and top_k < 0:
        raise UserError(f"{name}.top_k={top_k}: give 0 or more (0 keeps every token).")
    min_p = number(node, name, "min_p")
    if min_p is not None and not 0 <= min_p <= 1:
        raise UserError(f"{name}.min_p={min_p}: give a probability in [0, 1].")
    temperature = number(node, name, "temperature")
    if temperature is not None and temperature < 0:
        raise UserError(f"{name}.temperature={temperature}: give 0 (greedy) or more.")


def check_context(cfg: DictConfig) -> None:
    """Completions must fit the model's context: training's max_completion_length with room for a
    prompt, and every benchmark's max_new_tokens."""
    context = cfg.model.get("context_length")
    benchmarks = benchmarks_from_config(cfg.eval)
    if not context:
        return
    context, completion = int(context), int(cfg.trainer.max_completion_length)
    if completion >= context:
        raise UserError(
            f"trainer.max_completion_length={completion} leaves no room for a prompt in the {context}-token "
            f"context of model={cfg.model.name}; lower it below {context}."
        )
    for benchmark in benchmarks:
        if benchmark.max_new_tokens >= context:
            raise UserError(
                f"eval.benchmarks.{benchmark.name}.max_new_tokens={benchmark.max_new_tokens} does not fit the "
                f"{context}-token context of model={cfg.model.name}; lower eval.sampling.max_new_tokens."
            )


def check_data(data_cfg: DictConfig) -> None:
    if data_cfg.source == "reasoning_gym" and data_cfg.get("path"):
        raise UserError(
            f"data=reasoning_gym generates its problems and reads no data.path; for a local file use "
            f"data=open_rs data.path={data_cfg.path} (with data.question_column / data.answer_column)."
        )
    if data_cfg.source == "hub" and data_cfg.get("path"):
        check_local_path(str(data_cfg.path))


def check_gpu_settings(cfg: DictConfig, hardware: Hardware, plan_only: bool = False) -> None:
    """Refuse, with the fix, settings that only run on a CUDA GPU when there is none, and what vLLM would refuse
    only once it starts."""
    if not hardware.has_cuda:
        _refuse_gpu_only_settings(cfg)
    uses_vllm = cfg.generation.get("use_vllm") or cfg.eval.get("backend") == "vllm"
    if resolve_backend(str(cfg.eval.get("backend", "auto")), bool(cfg.generation.get("use_vllm"))) == "vllm":
        rank = evaluated_rank(cfg.lora)
        if rank:
            vllm_max_lora_rank(rank)  # the adapter this run saves must load into a vLLM engine
    if cfg.generation.get("use_vllm") and cfg.generation.get("vllm_enable_sleep_mode"):
        refuse_sleep_mode_with_expandable_segments(os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""), _vllm_version())
    if uses_vllm and not plan_only and importlib.util.find_spec("vllm") is None:
        raise UserError(
            "vLLM is not installed: pip install -e '.[vllm]' on a GPU machine (make setup-vllm on CPU), "
            "or use generation=hf eval.backend=hf."
        )


def _refuse_gpu_only_settings(cfg: DictConfig) -> None:
    needs_gpu = []
    if cfg.budget.device != "cpu":
        needs_gpu.append(f"budget={cfg.budget.name} counts {cfg.budget.device} GPU-hours (use budget=smoke)")
    if cfg.trainer.get("bf16"):
        needs_gpu.append("trainer.bf16=true (use trainer.bf16=null)")
    if cfg.trainer.get("fp16"):
        needs_gpu.append("trainer.fp16=true (use trainer.fp16=false)")
    if cfg.model.get("attn_implementation") == "flash_attention_2":
        needs_gpu.append("model.attn_implementation=flash_attention_2 (use sdpa)")
    if cfg.generation.get("use_vllm") and not _vllm_cpu_build():
        needs_gpu.append("generation=vllm without a CPU build of vLLM (use generation=hf)")
    if needs_gpu:
        raise UserError(
            f"CUDA is not usable here ({cuda_diagnosis()}), but the config asks for a GPU:\n  - "
            + "\n  - ".join(needs_gpu)
            + "\nRun on a GPU node (e.g. hydra/launcher=slurm_a40) or change the settings named above."
        )


def refuse_sleep_mode_with_expandable_segments(alloc_conf: str, vllm_version: str | None) -> None:
    """vLLM 0.19.1 (the CUDA 12 set) asserts against PyTorch's expandable segments in its sleep-mode allocator, at
    engine start (vllm/device_allocator/cumem.py); 0.31 switches them off inside its pool. The project leaves
    PYTORCH_CUDA_ALLOC_CONF alone with sleep mode on; one set by the user is refused here."""
    if "expandable_segments:true" not in alloc_conf.replace(" ", "").lower() or not vllm_version:
        return
    if tuple(int(part) for part in vllm_version.split(".")[:2] if part.isdigit()) < (0, 31):
        raise UserError(
            f"generation.vllm_enable_sleep_mode=true with PYTORCH_CUDA_ALLOC_CONF={alloc_conf!r}: vLLM "
            f"{vllm_version}'s sleep-mode allocator refuses expandable segments at engine start. Unset "
            "PYTORCH_CUDA_ALLOC_CONF (or drop expandable_segments:True from it), or set "
            "generation.vllm_enable_sleep_mode=false."
        )


def _vllm_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    for name in ("vllm", "vllm-cpu"):
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return None


def _vllm_cpu_build() -> bool:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        distribution("vllm-cpu")
        return True
    except PackageNotFoundError:
        return False
