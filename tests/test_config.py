"""Every config choice composes, resolves and builds the objects it describes."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

import rlvr_sweeps.resolvers  # noqa: F401
from rlvr_sweeps.budget import Budget
from rlvr_sweeps.errors import UserError
from rlvr_sweeps.hardware import Hardware
from rlvr_sweeps.resolvers import run_id
from rlvr_sweeps.trainer import grpo_config, lora_config

CONF = Path(__file__).resolve().parents[1] / "conf"
CPU = Hardware("cpu", "cpu", 2)
GROUPS = ["model", "lora", "budget", "data", "reward", "trainer", "generation", "logger", "experiment"]


def choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    OmegaConf.resolve(task)
    return task


@pytest.mark.parametrize("group,choice", [(g, c) for g in GROUPS for c in choices(g)])
def test_every_choice_composes_and_builds(group, choice, tmp_path):
    cfg = composed(f"{group}={choice}")
    assert cfg.model.source in {"hub", "gguf_package", "random", "sft"}
    Budget.from_config(cfg.budget)
    lora = lora_config(cfg.lora)
    assert (lora is None) == (cfg.lora.rank is None)
    args = grpo_config(cfg, output_dir=str(tmp_path), hardware=CPU, run_name="t", reward_weights=[1.0, 0.1])
    assert args.bf16 is False and args.use_cpu is True  # resolved for a CPU machine
    assert args.learning_rate == cfg.trainer.learning_rate  # TRL names pass through unchanged


def test_every_group_has_choices():
    for group in GROUPS:
        assert choices(group), f"conf/{group} is empty"


def test_default_is_the_offline_embedded_run():
    cfg = composed()
    assert (cfg.model.name, cfg.data.source, cfg.budget.name, cfg.generation.use_vllm, cfg.logger.mode) == (
        "smollm2", "reasoning_gym", "smoke", False, "offline")


def test_a_gpu_budget_brings_gpu_settings_and_the_command_line_still_wins():
    gpu = composed("budget=a40_24h")
    assert (gpu.generation.use_vllm, gpu.trainer.max_completion_length, gpu.lora.merge_for_rollouts) == (True, 3584, True)
    assert gpu.eval.sampling.n == 16  # the research default; only the smoke budget lowers it
    chosen = composed("budget=a40_24h", "generation=hf", "trainer=grpo_cpu")
    assert (chosen.generation.use_vllm, chosen.trainer.max_completion_length) == (False, 128)
    assert composed().eval.sampling.n == 4 and composed("eval.sampling.n=8").eval.sampling.n == 8


@pytest.mark.parametrize("rank", [8, 64, 256])
def test_lora_rank_is_a_plain_override(rank):
    lora = lora_config(composed(f"lora.rank={rank}").lora)
    assert lora.r == rank and lora.lora_alpha == 2 * rank and lora.target_modules == "all-linear"


def test_lora_alpha_absolute_wins_over_ratio():
    assert lora_config(composed("lora.rank=8", "lora.alpha=32").lora).lora_alpha == 32


def test_study_experiment_sets_the_gpu_setting():
    cfg = composed("experiment=study")
    assert (cfg.model.id, cfg.budget.minutes, cfg.data.path, cfg.generation.use_vllm, cfg.name) == (
        "Qwen/Qwen2.5-1.5B-Instruct", 1440, "knoveleng/open-rs", True, "study")


def test_unknown_trainer_field_names_the_closest_trl_field(tmp_path):
    cfg = composed("+trainer.learning_rte=0.1")
    with pytest.raises(UserError, match="learning_rate"):
        grpo_config(cfg, output_dir=str(tmp_path), hardware=CPU, run_name="t", reward_weights=[1.0])


def test_fields_owned_by_other_groups_are_refused(tmp_path):
    cfg = composed("+trainer.max_steps=5")
    with pytest.raises(UserError, match="budget.max_steps"):
        grpo_config(cfg, output_dir=str(tmp_path), hardware=CPU, run_name="t", reward_weights=[1.0])


def test_trl_refusals_become_user_errors(tmp_path):
    cfg = composed("trainer.per_device_train_batch_size=5", "trainer.gradient_accumulation_steps=1", "trainer.num_generations=4")
    with pytest.raises(UserError, match="TRL refused"):
        grpo_config(cfg, output_dir=str(tmp_path), hardware=CPU, run_name="t", reward_weights=[1.0])


def test_run_id_is_one_readable_bounded_folder_name():
    assert run_id("") == "default"
    assert run_id("lora.rank=8,model=tiny") == "lora.rank=8,model=tiny"
    assert "/" not in run_id("model.path=/data/models/x")
    long = run_id("x=" + "a" * 500)
    assert len(long) <= 200 and long != run_id("x=" + "a" * 499)
