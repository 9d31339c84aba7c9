"""End to end: `python launch.py` trains for real (tiny model, CPU), and bad input fails clearly."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

pytestmark = pytest.mark.e2e

TINY = ("model=tiny", "budget.max_steps=3")
SMALL_EVAL = ("eval.sampling.n=4", "eval.sampling.k=[1,4]")
SECRET = "0123456789abcdef0123456789abcdef01234567"


def test_one_run_trains_evaluates_and_records_everything(launch):
    result = launch(*TINY, *SMALL_EVAL, env={"WANDB_API_KEY": SECRET})
    assert result.returncode == 0, result.output
    (run_dir,) = result.run_dirs()
    assert (
        run_dir.name == "budget.max_steps=3,eval.sampling.k=[1,4],eval.sampling.n=4,model=tiny"
    )  # named by its overrides
    summary = result.summary(run_dir)
    assert (summary["status"], summary["stop_reason"], summary["global_step"]) == ("completed", "max_steps", 3)
    assert summary["budget"]["generated_tokens"] > 0 and summary["budget"]["device_hours"] > 0
    assert summary["versions"]["trl"] and summary["timings"]["mean_step_s"] > 0

    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2, 3]
    assert all("rewards/accuracy_reward/mean" in s and "completions/mean_length" in s for s in steps)

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"]["name"] == "tiny" and config["lora"]["rank"] == 64
    assert (run_dir / "checkpoints" / "checkpoint-3" / "adapter_model.safetensors").exists()
    assert (run_dir / "final" / "adapter_model.safetensors").exists()
    for phase in ("baseline", "final"):  # evaluated before and after training, sample by sample
        samples = [
            json.loads(line)
            for line in (run_dir / "eval" / phase / "reasoning_gym_heldout.jsonl").read_text().splitlines()
        ]
        assert len(samples) == 16 * 4 and {
            "problem_id",
            "sample",
            "extracted",
            "correct",
            "length",
            "truncated",
        } <= set(samples[0])
        assert summary["eval"][phase]["reasoning_gym_heldout"]["pass@1"] == sum(s["correct"] for s in samples) / len(
            samples
        )
    metrics = summary["metrics"]
    assert metrics["delta/reasoning_gym_heldout/pass@1"] == pytest.approx(
        metrics["eval/reasoning_gym_heldout/pass@1"] - metrics["baseline/reasoning_gym_heldout/pass@1"]
    )
    offline = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(offline) == 1 and summary["wandb"]["sync_command"].startswith("wandb sync ")
    for path in run_dir.rglob("*"):  # the API key from the environment is written nowhere
        if path.is_file() and path.suffix in {".yaml", ".json", ".jsonl", ".log", ".wandb", ".txt", ".md"}:
            assert SECRET not in path.read_text(errors="ignore"), path


def test_multirun_makes_one_folder_per_rank(launch):
    result = launch("-m", "lora.rank=8,64", "model=tiny", "budget.max_steps=2")
    assert result.returncode == 0, result.output
    runs = {d.name: d for d in result.run_dirs()}
    assert set(runs) == {"budget.max_steps=2,lora.rank=8,model=tiny", "budget.max_steps=2,lora.rank=64,model=tiny"}
    trainable = {}
    for name, run_dir in runs.items():
        rank = yaml.safe_load((run_dir / "config.yaml").read_text())["lora"]["rank"]
        summary = result.summary(run_dir)
        assert summary["status"] == "completed" and summary["lora"]["rank"] == rank
        trainable[rank] = summary["model"]["trainable_parameters"]
    assert set(trainable) == {8, 64}
    assert trainable[64] == 8 * trainable[8]  # LoRA parameters grow linearly with the rank


def test_wall_clock_budget_stops_a_real_run(launch):
    result = launch("model=tiny", "budget.minutes=0.3", "eval=[]")
    assert result.returncode == 0, result.output
    (run_dir,) = result.run_dirs()
    summary = result.summary(run_dir)
    assert summary["stop_reason"] == "wall_clock" and summary["global_step"] >= 1
    assert summary["budget"]["limit_s"] - summary["timings"]["max_step_s"] <= summary["budget"]["training_s"]
    assert summary["budget"]["training_s"] <= summary["budget"]["limit_s"]  # spent, and not more
    assert (run_dir / "checkpoints" / f"checkpoint-{summary['global_step']}").is_dir()  # saved where it stopped


def test_full_fine_tuning_is_the_reference_point(launch):
    result = launch("lora=none", *TINY)
    assert result.returncode == 0, result.output
    summary = result.summary(result.run_dirs()[0])
    assert summary["model"]["trainable_parameters"] == summary["model"]["parameters"]


def test_unreachable_wandb_keeps_the_run_and_names_the_sync_command(launch):
    result = launch(
        *TINY,
        "logger.mode=online",
        "logger.init_timeout_s=5",
        env={"WANDB_API_KEY": SECRET, "WANDB_BASE_URL": "http://127.0.0.1:9"},
    )
    assert result.returncode == 0, result.output
    summary = result.summary(result.run_dirs()[0])
    assert summary["status"] == "completed" and summary["wandb"]["mode"] == "offline"
    assert "unreachable" in summary["wandb"]["note"]
    assert summary["wandb"]["sync_command"] in result.output  # the user is told how to upload it


def test_local_dataset_with_column_mapping(launch, tmp_path):
    rows = [{"problem": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(20)]
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = launch("data=open_rs", f"data.path={path}", "model=tiny", "budget.max_steps=1")
    assert result.returncode == 0, result.output
    bad = launch("data=open_rs", f"data.path={path}", "data.question_column=question", "model=tiny")
    assert bad.returncode != 0 and "'question'" in bad.stderr and "problem" in bad.stderr


@pytest.mark.parametrize(
    "overrides,env,expected",
    [
        (("model=nope",), {}, ["Available options", "smollm2", "tiny"]),
        (
            ("model=instruct",),
            {"HF_ENDPOINT": "http://127.0.0.1:9"},
            ["cannot be reached", "model=smollm2", "model.path="],
        ),
        (
            ("model=tiny", "data=gsm8k"),
            {"HF_ENDPOINT": "http://127.0.0.1:9"},
            ["cannot be reached", "data=reasoning_gym"],
        ),
        (("model=tiny", "+trainer.learning_rte=1"), {}, ["learning_rate"]),
        (("model=tiny", "lora.rank=0"), {}, ["lora=none"]),
        (("model=tiny", "eval.sampling.n=2"), {}, ["Pass@4", "eval.sampling.n to at least 4"]),
    ],
    ids=["unknown-choice", "unreachable-model", "unreachable-dataset", "typo-in-trl-field", "bad-rank", "n-below-k"],
)
def test_bad_input_gets_one_clear_message(launch, tmp_path, overrides, env, expected):
    result = launch(*overrides, env={"HF_HOME": str(tmp_path / "hf"), **env}, timeout=120)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr
    for run_dir in result.run_dirs() if (result.runs / "default").exists() else []:
        assert result.summary(run_dir)["status"] == "failed"  # recorded, not lost


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_gpu_settings_on_a_cpu_machine_are_refused(launch):
    result = launch("budget=a40_24h", "trainer.bf16=true", "model=tiny")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "no CUDA GPU" in result.stderr and "budget=smoke" in result.stderr and "trainer.bf16" in result.stderr


def test_dry_run_prints_the_plan_and_trains_nothing(launch):
    result = launch("model=tiny", "lora.rank=8", "dry_run=true")
    assert result.returncode == 0, result.output
    assert "1 of 1 runs to go" in result.stdout and "runs/default/lora.rank=8,model=tiny" in result.stdout
    assert not (result.runs / "default" / "lora.rank=8,model=tiny" / "summary.json").exists()


def test_dry_run_of_a_sweep_prints_one_line_per_run_and_the_total(launch):
    done = launch("lora.rank=8", "model=tiny", "budget.max_steps=2", "eval=[]")  # one of the four is done already
    assert done.returncode == 0, done.output
    result = launch(
        "-m", "lora.rank=8,64", "model=tiny", "budget.max_steps=2", "eval=[],[reasoning_gym_heldout]", "dry_run=true"
    )
    assert result.returncode == 0, result.output
    plan = [line for line in result.stdout.splitlines() if line.startswith(("run ", "skip "))]
    assert len(plan) == 4 and [line.split()[0] for line in plan].count("skip") == 1
    assert "3 of 4 runs to go: at most" in result.stdout and "cpu device-hours" in result.stdout
    assert all(line.split()[2] == "0.10" for line in plan)  # 6 minutes of training each; evaluation apart
    with_eval = [line for line in plan if "reasoning_gym_heldout" in line]
    assert with_eval and all(float(line.split()[3]) > 0 for line in with_eval)  # its evaluation is estimated
    assert len(list(result.runs.glob("default/*/summary.json"))) == 1  # the dry run ran nothing
