"""Every config choice composes, resolves and builds the objects it describes."""

from __future__ import annotations

import json

import pytest

from conftest import ROOT, grpo_args
from conftest import compose_config as composed
from rlvr_sweeps.checks import check_config, check_context
from rlvr_sweeps.errors import UserError
from rlvr_sweeps.generation.sampling import benchmarks_from_config, selection_benchmark
from rlvr_sweeps.infra.hardware import Hardware
from rlvr_sweeps.policy.adapters import lora_config
from rlvr_sweeps.resolvers import run_id
from rlvr_sweeps.run.budget import Budget
from rlvr_sweeps.sweep import (
    Throughput,
    estimate_evaluation_s,
    format_plan,
    measured_throughput,
    plan_run,
    stop_window_s,
)

CONF = ROOT / "conf"
CPU = Hardware("cpu", "cpu", 2)
GROUPS = ["model", "lora", "budget", "data", "reward", "trainer", "generation", "logger", "search", "experiment"]


def choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group,choice", [(g, c) for g in GROUPS for c in choices(g)])
def test_every_choice_composes_and_builds(group, choice, tmp_path):
    cfg = composed(f"{group}={choice}")
    assert cfg.model.source in {"hub", "gguf_package", "random", "sft"}
    Budget.from_config(cfg.budget)
    lora = lora_config(cfg.lora)
    assert (lora is None) == (cfg.lora.rank is None)
    args = grpo_args(cfg, tmp_path, CPU, reward_weights=[1.0, 0.1])
    assert args.bf16 is False and args.use_cpu is True  # resolved for a CPU machine
    assert args.learning_rate == cfg.trainer.learning_rate  # TRL names pass through unchanged


def test_every_group_has_choices():
    for group in GROUPS:
        assert choices(group), f"conf/{group} is empty"


def test_default_is_the_offline_embedded_run():
    cfg = composed()
    assert (cfg.model.name, cfg.data.source, cfg.budget.name, cfg.generation.use_vllm, cfg.logger.mode) == (
        "smollm2",
        "reasoning_gym",
        "smoke",
        False,
        "offline",
    )


def test_a_gpu_budget_brings_gpu_settings_and_the_command_line_still_wins():
    gpu = composed("budget=a40_24h")
    assert (gpu.generation.use_vllm, gpu.trainer.max_completion_length, gpu.lora.merge_for_rollouts) == (
        True,
        3584,
        True,
    )
    assert gpu.eval.sampling.n == 16  # the research default; only the smoke budget lowers it
    chosen = composed("budget=a40_24h", "generation=hf", "trainer=grpo_cpu")
    assert (chosen.generation.use_vllm, chosen.trainer.max_completion_length) == (False, 32)
    assert composed().eval.sampling.n == 2 and composed("eval.sampling.n=8").eval.sampling.n == 8


@pytest.mark.parametrize("rank", [8, 64, 256])
def test_lora_rank_is_a_plain_override(rank):
    lora = lora_config(composed(f"lora.rank={rank}").lora)
    assert lora.r == rank and lora.lora_alpha == 2 * rank and lora.target_modules == "all-linear"


def test_lora_alpha_absolute_wins_over_ratio():
    assert lora_config(composed("lora.rank=8", "lora.alpha=32").lora).lora_alpha == 32


def test_study_experiment_sets_the_gpu_setting():
    cfg = composed("experiment=study")
    assert (cfg.model.id, cfg.budget.minutes, cfg.data.path, cfg.generation.use_vllm, cfg.name) == (
        "Qwen/Qwen2.5-1.5B-Instruct",
        1260,
        "knoveleng/open-rs",
        True,
        "study",
    )
    assert cfg.trainer.disable_dropout is True and cfg.lora.dropout == 0.0  # the policy ratio is 1 on policy
    selection = cfg.eval.selection
    assert (cfg.eval.select_on, selection.n, selection.max_problems) == ("math500", 4, 100)


@pytest.mark.parametrize("model,limit", [("instruct", 32256), ("math", 3584), ("distill", 32768)])
def test_the_study_evaluates_each_model_up_to_its_own_limit(model, limit):
    cfg = composed("experiment=study", f"model={model}")
    assert {name: b.max_new_tokens for name, b in cfg.eval.benchmarks.items()} == dict.fromkeys(
        ["math500", "aime24", "aime25", "amc23"], limit
    )
    assert cfg.trainer.max_completion_length == 3584  # training's limit is independent of it
    check_context(cfg)  # everything fits its context


@pytest.mark.parametrize(
    "overrides,message",
    [
        (("budget.minutes=-5",), "budget.minutes=-5"),
        (("budget.minutes=0",), "more than 0"),
        (
            ("model=math", "experiment=study", "eval.sampling.max_new_tokens=8192"),
            "does not fit the 4096-token context",
        ),
        (("model=math", "experiment=study", "trainer.max_completion_length=4096"), "leaves no room for a prompt"),
        (("data.path=/no/such/file.jsonl",), "data=reasoning_gym generates its problems"),
        (("data=open_rs", "data.path=/no/such/file.jsonl"), "does not exist"),
        (("+reward.weights.lenght=1",), "Unknown reward function"),
        (("lora.rank=0",), "lora=none"),
        (("eval.sampling.n=1",), "Pass@2"),
        (("eval.select_on=reasoning_gym_heldout", "eval.selection.k=[8]"), "eval.selection"),
        (("trainer.learning_rate=-1",), "trainer.learning_rate=-1: give a positive learning rate"),
        (("trainer.max_completion_length=0",), "trainer.max_completion_length=0: give at least 1"),
        (("budget.minutes=abc",), "budget.minutes=abc: give a number"),
        (("budget.max_steps=2.5",), "budget.max_steps=2.5: give a whole number"),
        (("trainer.learning_rate=fast",), "trainer.learning_rate=fast: give a number"),
        (("trainer.temperature=0",), "trainer.temperature=0.0: GRPO samples several completions"),
        (("trainer.top_p=1.5",), "trainer.top_p=1.5: give a probability in \\(0, 1\\]"),
        (("+trainer.top_k=-1",), "trainer.top_k=-1: give 0 or more"),
        (("eval.sampling.top_p=0",), "eval.sampling.top_p=0.0: give a probability"),
    ],
    ids=[
        "negative-budget",
        "zero-budget",
        "eval-beyond-context",
        "training-beyond-context",
        "path-for-generated-data",
        "missing-local-data",
        "unknown-reward",
        "bad-rank",
        "n-below-k",
        "selection-k-above-n",
        "negative-learning-rate",
        "no-completion-tokens",
        "budget-not-a-number",
        "steps-not-whole",
        "learning-rate-not-a-number",
        "greedy-training",
        "top-p-above-1",
        "negative-top-k",
        "eval-top-p-0",
    ],
)
def test_check_config_refuses_bad_settings_with_one_line(overrides, message):
    cfg = composed(*overrides)
    check = check_context if "experiment=study" in overrides else lambda c: check_config(c, CPU)  # no GPU here
    with pytest.raises(UserError, match=message) as err:
        check(cfg)
    assert "\n" not in str(err.value)


def test_the_plan_counts_training_and_estimated_evaluation_and_caps_the_job_time(tmp_path):
    cfg = composed("experiment=study", "lora.rank=8")
    plan = plan_run(cfg, tmp_path / "run", ["lora.rank=8"], max_time_min=1440)
    assert plan.training_hours == 21.0 and 2.0 < plan.evaluation_hours < 3.5
    assert plan.evaluation_hours == pytest.approx(estimate_evaluation_s(cfg) / 3600)
    assert plan.job_minutes <= 1440 and plan.jobs == 1
    longer = plan_run(composed("experiment=study", "budget.minutes=2000"), tmp_path / "run", [], max_time_min=1440)
    assert (longer.job_minutes, longer.jobs) == (1440, 2)  # the requeue finishes the rest
    text = format_plan([plan, longer])
    assert "21.00" in text and "24:00" in text and "training only" in text
    cheaper = estimate_evaluation_s(composed("experiment=study", "eval.selection.max_problems=10"))
    assert cheaper < estimate_evaluation_s(cfg)  # the selection subset is what the estimate counts


def test_selection_answers_are_as_long_as_training_ones_not_the_benchmarks_32k():
    cfg = composed("experiment=study")
    benchmarks = benchmarks_from_config(cfg.eval)
    selection = selection_benchmark(cfg.eval, benchmarks)
    reported = next(b for b in benchmarks if b.name == "math500")
    assert (reported.max_new_tokens, selection.max_new_tokens) == (32256, 3584)  # instruct: 32k reported
    own = selection_benchmark(composed("experiment=study", "eval.selection.max_new_tokens=1024").eval, benchmarks)
    assert own.max_new_tokens == 1024


def test_a_sweeps_second_plan_estimates_evaluation_from_what_its_first_runs_measured(tmp_path):
    """A completed run of the same model recorded its evaluations' tokens and seconds: the plan of the
    next run of the sweep uses them instead of budget.estimate's assumption (2,000 tokens at 2,500/s)."""
    cfg = composed("experiment=study", "lora.rank=8")
    sweep = tmp_path / "study"
    assumed = plan_run(cfg, sweep / "lora.rank=8", [], max_time_min=1440)
    assert not assumed.measured and not measured_throughput(sweep, "instruct")
    evaluations = {
        name: {"problems": 30, "n": 16, "generated_tokens": 30 * 16 * 6000, "seconds": 30 * 16 * 6000 / 1500}
        for name in ("aime24", "aime25", "amc23", "math500")
    }
    for metrics in evaluations.values():
        metrics["tokens_per_s"] = metrics["generated_tokens"] / metrics["seconds"]
    (sweep / "lora.rank=64").mkdir(parents=True)
    (sweep / "lora.rank=64" / "summary.json").write_text(
        json.dumps({"model": {"name": "instruct"}, "eval": {"baseline": evaluations, "final": evaluations}})
    )
    measured = measured_throughput(sweep, "instruct")
    assert measured["aime24"] == Throughput(6000.0, 1500.0, 2) and not measured_throughput(sweep, "math")
    plan = plan_run(cfg, sweep / "lora.rank=8", [], max_time_min=1440)
    assert plan.measured and plan.evaluation_hours > 2 * assumed.evaluation_hours  # 6,000 tokens at 1,500/s
    assert plan.evaluation_hours == pytest.approx(estimate_evaluation_s(cfg, measured) / 3600)
    assert "m " in format_plan([plan])


def test_the_stop_window_holds_the_slowest_step_a_save_and_the_hand_over(tmp_path):
    cfg = composed("experiment=study", "lora.rank=8")
    sweep = tmp_path / "study"
    assert stop_window_s(cfg, sweep) == (250 + 60 + 60, False)  # budget.estimate until a run measured them
    (sweep / "lora.rank=64").mkdir(parents=True)
    timings = {"max_step_s": 412.5, "mean_checkpoint_save_s": 18.0}
    (sweep / "lora.rank=64" / "summary.json").write_text(
        json.dumps({"model": {"name": "instruct"}, "timings": timings})
    )
    assert stop_window_s(cfg, sweep) == (412.5 + 18.0 + 60, True)
    plan = plan_run(cfg, sweep / "lora.rank=8", [], max_time_min=1440)
    assert "stop window: 490 s" in format_plan([plan]) and "measured by earlier runs" in format_plan([plan])


def test_unknown_trainer_field_names_the_closest_trl_field(tmp_path):
    cfg = composed("+trainer.learning_rte=0.1")
    with pytest.raises(UserError, match="learning_rate"):
        grpo_args(cfg, tmp_path, CPU)


def test_fields_owned_by_other_groups_are_refused(tmp_path):
    cfg = composed("+trainer.max_steps=5")
    with pytest.raises(UserError, match="budget.max_steps"):
        grpo_args(cfg, tmp_path, CPU)


def test_trl_refusals_become_user_errors(tmp_path):
    cfg = composed(
        "trainer.per_device_train_batch_size=5", "trainer.gradient_accumulation_steps=1", "trainer.num_generations=4"
    )
    with pytest.raises(UserError, match="TRL refused"):
        grpo_args(cfg, tmp_path, CPU)


def test_run_id_is_one_readable_bounded_folder_name():
    assert run_id("") == "default"
    assert run_id("lora.rank=8,model=tiny") == "lora.rank=8,model=tiny"
    assert "/" not in run_id("model.path=/data/models/x")
    long = run_id("x=" + "a" * 500)
    assert len(long) <= 200 and long != run_id("x=" + "a" * 499)


def test_a_sweep_names_every_hub_model_and_dataset_its_runs_load():
    from rlvr_sweeps.infra.hub import required_items

    items = required_items(composed("experiment=study", "model=math", "model.revision=v1"))
    assert [(i.kind, i.repo_id, i.revision, i.needed_by) for i in items] == [
        ("model", "Qwen/Qwen2.5-Math-1.5B-Instruct", "v1", "model=math"),
        ("dataset", "knoveleng/open-rs", None, "data=open_rs"),
        ("dataset", "HuggingFaceH4/MATH-500", None, "eval=math500"),
        ("dataset", "HuggingFaceH4/aime_2024", None, "eval=aime24"),
        ("dataset", "yentinglin/aime_2025", None, "eval=aime25"),
        ("dataset", "math-ai/amc23", None, "eval=amc23"),
    ]
    assert items[0].fetch_command() == "hf download Qwen/Qwen2.5-Math-1.5B-Instruct --revision v1"
    local = required_items(composed("experiment=study", "data.path=/shared/open-rs.jsonl", "eval=[aime24]"))
    assert [i.repo_id for i in local] == ["Qwen/Qwen2.5-1.5B-Instruct", "HuggingFaceH4/aime_2024"]
    assert required_items(composed("model=smollm2_math")) == []  # packaged, procedural: nothing to fetch


@pytest.mark.parametrize(
    "torch_cuda,driver,expected",
    [
        ("13.0", "", "no NVIDIA driver is visible"),
        ("13.0", "535.104.05", "runs CUDA 12 at most (CUDA 13 needs R580+): install with constraints/gpu-cuda12.txt"),
        ("13.0", "550.54.15", "install with constraints/gpu-cuda12.txt"),
        ("12.8", "535.104.05", "is visible and fits constraints/gpu-cuda12.txt"),
        ("13.0", "580.65.06", "is visible and fits constraints/gpu.txt"),
        ("13.0", "470.82.01", "older than R525"),
        (None, "535.104.05", "a CPU build"),
    ],
)
def test_a_refused_gpu_config_says_what_cuda_it_saw(torch_cuda, driver, expected):
    from rlvr_sweeps.infra.hardware import cuda_diagnosis

    text = cuda_diagnosis(torch_cuda, driver or "")
    assert expected in text and "\n" not in text
