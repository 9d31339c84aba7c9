"""`python launch.py` as a user runs it, in a subprocess: what only a real command shows - the run folder
it writes, exit codes, messages without tracebacks, signals, Hydra's multirun and the local launcher.
(Training behaviour is tested in process, in test_training.py.)"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT, OfflineWandbRun, launch_env, train_in_process
from rlvr_sweeps.upload import main as upload_main

pytestmark = pytest.mark.e2e

TINY = ("model=tiny", "budget.max_steps=3", "trainer.max_completion_length=16")
QUICK = ("model=tiny", "budget.max_steps=2", "trainer.max_completion_length=8", "eval=[]", "logger=none")
SECRET = "0123456789abcdef0123456789abcdef01234567"


def test_one_run_trains_evaluates_and_records_everything(launch):
    result = launch(
        "model=tiny_math",
        "data=sums",
        "eval=[sums_heldout]",
        "budget.max_steps=3",
        "trainer.max_completion_length=16",
        env={"WANDB_API_KEY": SECRET},
    )
    assert result.returncode == 0, result.output
    (run_dir,) = result.run_dirs()
    assert (
        run_dir.name
        == "budget.max_steps=3,data=sums,eval=[sums_heldout],model=tiny_math,trainer.max_completion_length=16"
    )
    summary = result.summary(run_dir)
    assert (summary["status"], summary["stop_reason"], summary["global_step"]) == ("completed", "max_steps", 3)
    assert summary["budget"]["generated_tokens"] > 0 and summary["budget"]["training_device_hours"] > 0
    assert (
        summary["budget"]["evaluation_s"] > 0 and summary["versions"]["trl"] and summary["timings"]["mean_step_s"] > 0
    )

    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2, 3]
    assert all("rewards/accuracy_reward/mean" in s and "completions/mean_length" in s for s in steps)

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"]["name"] == "tiny_math" and config["lora"]["rank"] == 64
    assert (run_dir / "checkpoints" / "checkpoint-3" / "adapter_model.safetensors").exists()
    assert (run_dir / "final" / "adapter_model.safetensors").exists()
    for phase in ("baseline", "final"):  # evaluated before and after training, sample by sample
        samples = [
            json.loads(line) for line in (run_dir / "eval" / phase / "sums_heldout.jsonl").read_text().splitlines()
        ]
        assert len(samples) == summary["eval"][phase]["sums_heldout"]["problems"] * 2  # smoke budget: n=2
        assert {"problem_id", "sample", "extracted", "correct", "length", "truncated"} <= set(samples[0])
        assert summary["eval"][phase]["sums_heldout"]["pass@1"] == sum(s["correct"] for s in samples) / len(samples)
        measured = summary["eval"][phase]["sums_heldout"]  # what the sweep's next plan estimates from
        assert measured["generated_tokens"] == sum(s["length"] for s in samples) and measured["tokens_per_s"] > 0
    metrics = summary["metrics"]
    assert metrics["delta/sums_heldout/pass@1"] == pytest.approx(
        metrics["eval/sums_heldout/pass@1"] - metrics["baseline/sums_heldout/pass@1"]
    )
    # the verdict: one line, logged and kept, with the interval of the change; and the reward picture
    verdict = summary["verdict"]
    assert (
        verdict["line"] in result.output and "sums_heldout Pass@1" in verdict["line"] and "problems" in verdict["line"]
    )
    assert verdict["sums_heldout"]["ci_low"] <= verdict["sums_heldout"]["delta"] <= verdict["sums_heldout"]["ci_high"]
    assert (run_dir / "reward.png").stat().st_size > 10_000
    offline = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(offline) == 1 and summary["wandb"]["sync_command"].startswith("wandb sync ")
    for path in run_dir.rglob("*"):  # the API key from the environment is written nowhere
        if path.is_file() and path.suffix in {".yaml", ".json", ".jsonl", ".log", ".wandb", ".txt", ".md"}:
            assert SECRET not in path.read_text(errors="ignore"), path


def test_multirun_makes_one_folder_per_rank(launch):
    result = launch("-m", "lora.rank=8,64", *QUICK)
    assert result.returncode == 0, result.output
    runs = {d.name: d for d in result.run_dirs()}
    prefix = "budget.max_steps=2,eval=[],lora.rank="
    assert set(runs) == {f"{prefix}{rank},model=tiny,trainer.max_completion_length=8" for rank in (8, 64)}
    trainable = {}
    for run_dir in runs.values():
        rank = yaml.safe_load((run_dir / "config.yaml").read_text())["lora"]["rank"]
        summary = result.summary(run_dir)
        assert summary["status"] == "completed" and summary["lora"]["rank"] == rank
        trainable[rank] = summary["model"]["trainable_parameters"]
    assert trainable[64] == 8 * trainable[8]  # LoRA parameters grow linearly with the rank
    assert "2 completed" in result.stdout  # the sweep's report


def test_the_local_submitit_launcher_runs_a_sweep_as_jobs(launch):
    result = launch("-m", "hydra/launcher=local", "trainer.seed=0,1", *QUICK)
    assert result.returncode == 0, result.output
    summaries = [result.summary(d) for d in result.run_dirs()]
    assert len(summaries) == 2 and all(s["status"] == "completed" for s in summaries)
    assert "2 of 2 runs to go" in result.stdout and "2 completed" in result.stdout
    assert list((result.runs / "default" / ".submitit").glob("*/*_result.pkl"))  # ran as submitit jobs


def stopped_after_three_steps(args: list[str], tmp_path, model_cache, signum) -> tuple[str, subprocess.Popen, Path]:
    """`args` launched as a user would, sent `signum` once its run logged 3 steps: its output, the process (ended)
    and the run's metrics.jsonl."""
    process = subprocess.Popen(
        args,
        cwd=tmp_path,
        env=launch_env(tmp_path / "runs", model_cache),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    metrics = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and (metrics is None or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.2)
        metrics = next(iter((tmp_path / "runs").glob("default/*/metrics.jsonl")), None)
    process.send_signal(signum)
    output, _ = process.communicate(timeout=300)
    return output, process, metrics


def test_ctrl_c_saves_the_step_in_one_line_and_exits_130(tmp_path, model_cache):
    """Ctrl-C on a local run stops it as SIGTERM does (the last finished step saved at once, not at save_steps),
    with one line instead of a KeyboardInterrupt traceback, and the shell's status for Ctrl-C."""
    args = [sys.executable, str(ROOT / "launch.py"), "model=tiny", "budget.max_steps=400"]
    args += ["trainer.max_completion_length=8", "trainer.save_steps=100", "eval=[]", "logger=none"]
    output, process, metrics = stopped_after_three_steps(args, tmp_path, model_cache, signal.SIGINT)
    assert process.returncode == 130 and "Traceback" not in output and "KeyboardInterrupt" not in output, output[
        -3000:
    ]
    assert "Stopped by Ctrl-C: the run is saved; the same command resumes it." in output
    stopped = json.loads((metrics.parent / "summary.json").read_text())
    assert stopped["status"] == "interrupted" and "SIGINT" in stopped["stop_reason"]
    assert (metrics.parent / "checkpoints" / f"checkpoint-{stopped['global_step']}" / "COMPLETE").exists()


def test_sigterm_saves_the_step_and_a_relaunch_resumes_outside_slurm(tmp_path, model_cache):
    """What a preemption does to a local run: save the current step, stop, say so; the same command resumes."""
    args = [
        sys.executable,
        str(ROOT / "launch.py"),
        "model=tiny",
        "budget.max_steps=40",
        "trainer.max_completion_length=8",
        "trainer.save_steps=100",
        "eval=[]",
        "logger=none",
    ]
    env = launch_env(tmp_path / "runs", model_cache)
    output, process, metrics = stopped_after_three_steps(args, tmp_path, model_cache, signal.SIGTERM)
    assert process.returncode == 0, output[-3000:]
    run_dir = metrics.parent
    stopped = json.loads((run_dir / "summary.json").read_text())
    assert stopped["status"] == "interrupted" and "SIGTERM" in stopped["stop_reason"] and "resumes" in output
    step = stopped["global_step"]
    assert (run_dir / "checkpoints" / f"checkpoint-{step}" / "COMPLETE").exists()  # saved at once, not at save_steps

    again = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    done = json.loads((run_dir / "summary.json").read_text())
    assert done["status"] == "completed" and done["global_step"] == 40
    assert done["attempts"][-1]["resumed_from_step"] == step
    assert [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()] == list(
        range(1, 41)
    )
    # the W&B run of the folder, written from it (offline: for a later `wandb sync`), twice: the same run
    uploaded = []
    for _ in range(2):
        assert upload_main([str(run_dir.parent), "--offline"]) == 0
        (offline,) = (run_dir / "wandb-upload" / "wandb").glob("offline-run-*")
        uploaded.append(OfflineWandbRun(offline))
    first, second = uploaded
    assert [row["train/global_step"] for row in first.scan_history(["train/global_step"])] == list(range(1, 41))
    assert [row["_step"] for row in first.scan_history(["train/reward"])] == list(range(1, 41))  # W&B's step
    assert first.summary["status"] == "completed" and first.summary["global_step"] == 40
    assert first.config["trainer"]["max_completion_length"] == 8
    logged = lambda run: [  # noqa: E731 - what was logged, without W&B's own wall-clock fields
        {k: v for k, v in row.items() if k == "_step" or not k.startswith("_")} for row in run.scan_history([])
    ]
    assert logged(second) == logged(first)  # a second upload of the same folder: the same run


def test_sigterm_with_a_grace_shorter_than_a_step_keeps_every_finished_step(tmp_path, model_cache):
    """A preemption whose grace period (here 4 s, then SIGKILL) is shorter than a step (about 10 s: 8 answers
    of 1,024 tokens): the step in flight is abandoned and the last finished one saved within the grace."""
    args = [
        sys.executable,
        str(ROOT / "launch.py"),
        "model=tiny",
        "budget.max_steps=40",
        "trainer.max_completion_length=1024",
        "trainer.save_steps=100",
        "eval=[]",
        "logger=none",
    ]
    env = launch_env(
        tmp_path / "runs", model_cache, {"OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    )  # a crash shows where
    process = subprocess.Popen(
        args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline, metrics = time.monotonic() + 300, None
    while time.monotonic() < deadline and (metrics is None or not metrics.read_text().strip()):
        time.sleep(0.2)
        metrics = next(iter((tmp_path / "runs").glob("default/*/metrics.jsonl")), None)
    time.sleep(1)  # into the second step's rollouts
    process.send_signal(signal.SIGTERM)
    try:
        output, _ = process.communicate(timeout=4)
    except subprocess.TimeoutExpired:  # the grace period is over
        process.kill()
        output, _ = process.communicate()
    run_dir = metrics.parent
    logged = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    stopped = json.loads((run_dir / "summary.json").read_text())
    assert process.returncode == 0, output[-3000:]  # done within the grace, not killed
    assert stopped["status"] == "interrupted" and "SIGTERM" in stopped["stop_reason"]
    assert stopped["global_step"] == logged[-1] >= 1 and "abandoning the step in flight" in output
    marker = json.loads((run_dir / "checkpoints" / f"checkpoint-{logged[-1]}" / "COMPLETE").read_text())
    assert marker["training_s"] <= stopped["budget"]["training_s"] + 1e-6  # the abandoned work is not spent


def test_unreachable_wandb_keeps_the_run_and_names_the_sync_command(launch):
    result = launch(
        *QUICK[:-1],
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
    result = launch("data=open_rs", f"data.path={path}", *QUICK)
    assert result.returncode == 0, result.output
    assert result.summary(result.run_dirs()[0])["data"]["problems"] == 20


UNREACHABLE_HUB = {"HF_ENDPOINT": "http://127.0.0.1:9"}


@pytest.mark.parametrize(
    "overrides,env,expected,recorded",
    [
        (("model=nope",), {}, ["Available options", "smollm2", "tiny"], False),
        (("model=instruct",), UNREACHABLE_HUB, ["cannot be reached", "model=smollm2", "model.path="], True),
        (("model=tiny", "data=gsm8k"), UNREACHABLE_HUB, ["cannot be reached", "data=reasoning_gym"], True),
        (("model=tiny", "budget.minutes=-5"), {}, ["budget.minutes=-5", "more than 0"], True),
        (
            ("model=tiny", "data.path=/data/x.jsonl"),
            {},
            ["data=reasoning_gym generates", "data=open_rs data.path="],
            True,
        ),
        (
            ("model=tiny", "data=open_rs", "data.path=PROBLEMS", "data.question_column=question"),
            {},
            ["'question'"],
            True,
        ),
    ],
    # the other refusals of check_config are tested in process (test_config.py)
    ids=[
        "unknown-choice",
        "unreachable-model",
        "unreachable-dataset",
        "negative-budget",
        "path-for-generated-data",
        "wrong-column",
    ],
)
def test_bad_input_gets_one_clear_message_and_a_record(launch, tmp_path, overrides, env, expected, recorded):
    problems = tmp_path / "problems.jsonl"
    problems.write_text('{"problem": "1 + 1?", "answer": "2"}\n')
    overrides = [o.replace("PROBLEMS", str(problems)) for o in overrides]
    result = launch(*overrides, env={"HF_HOME": str(tmp_path / "hf"), **env}, timeout=120)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr
    records = list(result.runs.glob("default/*/summary.json"))
    if recorded:  # the run folder says what failed and why (a relaunch retries it), nothing is lost
        (record,) = records
        summary = json.loads(record.read_text())
        assert summary["status"] == "failed" and expected[0] in summary["error"]
    else:  # refused by Hydra before any run exists
        assert records == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_gpu_settings_on_a_cpu_machine_are_refused(launch):
    result = launch("budget=a40_24h", "trainer.bf16=true", "model=tiny")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "CUDA is not usable here" in result.stderr and "budget=smoke" in result.stderr
    assert "trainer.bf16" in result.stderr and "no NVIDIA driver is visible" in result.stderr  # what it saw


def test_dry_run_prints_the_plan_and_trains_nothing(launch):
    result = launch("model=tiny", "lora.rank=8", "dry_run=true")
    assert result.returncode == 0, result.output
    assert "1 of 1 runs to go" in result.stdout and "runs/default/lora.rank=8,model=tiny" in result.stdout
    assert not (result.runs / "default" / "lora.rank=8,model=tiny" / "summary.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="plans a GPU sweep on a machine without CUDA")
def test_a_gpu_sweep_is_planned_on_a_machine_without_a_gpu(launch):
    """A plan trains nothing: the basic launcher prints it on a laptop (a real run is still refused, above).
    Two of rank_vs_lr's 20 runs (each costs Hydra a second to compose; test_rank_vs_lr plans all 20)."""
    result = launch("-m", "experiment=rank_vs_lr", "lora.rank=8,256", "trainer.learning_rate=1e-5", "dry_run=true")
    assert result.returncode == 0, result.output
    assert "Traceback" not in result.stderr and "CUDA is not usable" not in result.stderr
    assert "2 of 2 runs to go" in result.stdout and "a40 device-hours" in result.stdout


def test_dry_run_of_a_sweep_prints_one_line_per_run_and_the_total(launch, tmp_path, model_cache):
    # one of the four runs is done (trained in this process, in the runs folder the launches use)
    train_in_process(
        tmp_path / "runs", model_cache, "lora.rank=8", "model=tiny", "budget.max_steps=2", "eval=[]", "logger=none"
    )
    sweep = (
        "-m",
        "lora.rank=8,64",
        "model=tiny",
        "budget.max_steps=2",
        "eval=[],[reasoning_gym_heldout]",
        "logger=none",
    )
    result = launch(*sweep, "dry_run=true")
    assert result.returncode == 0, result.output
    plan = [line for line in result.stdout.splitlines() if line.startswith(("run ", "skip "))]
    assert len(plan) == 4 and [line.split()[0] for line in plan].count("skip") == 1
    assert "3 of 4 runs to go: at most" in result.stdout and "cpu device-hours" in result.stdout
    assert all(line.split()[2] == "0.09" for line in plan)  # 5.5 minutes of training each; evaluation apart
    with_eval = [line for line in plan if "reasoning_gym_heldout" in line]
    assert with_eval and all(float(line.split()[3]) > 0 for line in with_eval)  # its evaluation is estimated
    assert len(list(result.runs.glob("default/*/summary.json"))) == 1  # the dry run ran nothing
