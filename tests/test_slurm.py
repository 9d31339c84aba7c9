"""Sweeps on a real one-machine SLURM cluster (scripts/slurm/cluster.sh, started here if needed):
results come back, a requeued job resumes from its checkpoint, failures are reported."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, training_bounds

pytestmark = [pytest.mark.slurm, pytest.mark.e2e, pytest.mark.xdist_group("slurm")]  # one worker: one cluster

CLUSTER = ROOT / "scripts" / "slurm" / "cluster.sh"
SMALL = (
    "model=tiny",
    "eval.sampling.n=2",
    "eval.sampling.k=[1,2]",
    "hydra/launcher=slurm_a40",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=3",
)


@pytest.fixture(scope="session")
def slurm_conf():
    """The cluster's SLURM_CONF; starts the cluster when it is not running and stops it afterwards."""
    running = subprocess.run([str(CLUSTER), "status"], capture_output=True, text=True).returncode == 0
    if not running:
        started = subprocess.run([str(CLUSTER), "start"], capture_output=True, text=True, timeout=600)
        assert started.returncode == 0, started.stderr[-3000:]
    conf = subprocess.run([str(CLUSTER), "env"], capture_output=True, text=True).stdout.strip().split("=", 1)[1]
    yield conf
    if not running:
        subprocess.run([str(CLUSTER), "stop"], capture_output=True, timeout=300)


@pytest.fixture
def sweep(tmp_path, model_cache, slurm_conf):
    runs = tmp_path / "runs"
    env = {
        **os.environ,
        "SLURM_CONF": slurm_conf,
        "RLVR_SWEEPS_RUNS": str(runs),
        "RLVR_SWEEPS_CACHE": str(model_cache),
        "WANDB_SILENT": "true",
    }
    env.pop("WANDB_API_KEY", None)

    def run(*args: str, timeout: float = 600, base=SMALL) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(ROOT / "launch.py"), "-m", *base, *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    run.runs = runs
    run.env = env
    return run


def summaries(folder: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in folder.glob("*/summary.json")}


def wait_for(predicate, timeout: float, what: str, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_2x2_sweep_of_single_gpu_jobs_comes_back(sweep):
    args = ("lora.rank=8,64", "trainer.seed=0,1", "budget.max_steps=2", "logger=none")  # W&B: the requeue test
    done = sweep(*args, "hydra.launcher.wait=true")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = summaries(sweep.runs / "default")
    assert len(runs) == 4 and all(s["status"] == "completed" and s["global_step"] == 2 for s in runs.values())
    seeds = lambda s: next(o for o in s["overrides"] if o.startswith("trainer.seed="))  # noqa: E731
    assert {(s["lora"]["rank"], seeds(s)) for s in runs.values()} == {
        (8, "trainer.seed=0"),
        (8, "trainer.seed=1"),
        (64, "trainer.seed=0"),
        (64, "trainer.seed=1"),
    }
    assert len({s["slurm_job_id"] for s in runs.values()}) == 4  # one SLURM job each
    assert "4 completed" in done.stdout
    # the stop signal comes as long before the limit as a step, a save and the hand-over take (budget=smoke's
    # estimate: 7 + 2 + 60 s), not a guessed five minutes
    assert "stop window: 69 s" in done.stdout
    (script,) = {p.read_text() for p in (sweep.runs / "default" / ".submitit").glob("*/*_submission.sh")}
    assert "#SBATCH --signal=USR2@69" in script

    again = sweep(*args, "hydra.launcher.wait=true")
    assert again.returncode == 0 and "0 of 4 runs to go" in again.stdout and "submitted" not in again.stdout


def test_a_requeued_job_resumes_from_its_checkpoint(sweep):
    """With milestones at steps 5 and 10: the first is kept before the requeue and never saved again, the second
    after it; rotation (2 checkpoints) deletes neither."""
    submitted = sweep(
        "name=requeue", "budget.max_steps=20", "trainer.save_steps=3", "eval=[]", "budget.milestones=[0.25,0.5]"
    )
    assert submitted.returncode == 0 and "1 jobs queued" in submitted.stdout, submitted.stdout + submitted.stderr
    folder = sweep.runs / "requeue"

    def progress():
        runs = summaries(folder)
        return next(iter(runs.values())) if runs and next(iter(runs.values())).get("global_step", 0) >= 6 else None

    before = wait_for(progress, 300, "training to reach step 6")
    requeued = subprocess.run(
        ["scontrol", "requeue", str(before["slurm_job_id"])], env=sweep.env, capture_output=True, text=True
    )
    assert requeued.returncode == 0, requeued.stderr
    after = wait_for(
        lambda: next((s for s in summaries(folder).values() if s["status"] == "completed"), None),
        600,
        "the requeued run to complete",
    )
    run_dir = Path(after["run_dir"])
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 21))  # every step once: none lost, none duplicated
    first, second = after["attempts"]
    assert first["resumed_from_step"] == 0 and second["resumed_from_step"] >= before["global_step"]
    assert after["global_step"] == 20 and after["stop_reason"] == "max_steps"
    kept = after["milestones"]
    assert {name: entry["step"] for name, entry in kept.items()} == {"0.25": 5, "0.5": 10}
    assert kept["0.25"] == before["milestones"]["0.25"]  # kept by the first job, not saved again by the second
    assert kept["0.5"]["saved_at"] >= second["started_at"]
    for name in kept:
        assert (run_dir / "milestones" / name / "adapter_model.safetensors").exists()
    assert not (run_dir / "checkpoints" / "checkpoint-5").exists()  # rotated away; the milestone stays
    assert after["wandb"]["run_id"] == before["wandb"]["run_id"]  # the same W&B run, resumed
    assert after["budget"]["training_s"] > before["budget"]["training_s"] > 0  # the first attempt's training counts


def test_a_failing_job_is_reported_as_failed_and_retried_on_relaunch(sweep):
    args = (
        "name=broken",
        "data=open_rs",
        "data.path=/nonexistent/problems.jsonl",
        "budget.max_steps=1",
        "logger=none",
        "hydra.launcher.wait=true",
    )
    done = sweep(*args)
    assert done.returncode != 0 and "1 of 1 runs did not complete" in done.stderr
    assert "Traceback" not in done.stderr
    (summary,) = summaries(sweep.runs / "broken").values()
    assert summary["status"] == "failed" and "/nonexistent/problems.jsonl" in summary["error"]
    assert "failed" in done.stdout and "/nonexistent/problems.jsonl" in done.stdout  # in the sweep's table

    status = subprocess.run(
        [sys.executable, "-m", "rlvr_sweeps.sweep", str(sweep.runs / "broken")], capture_output=True, text=True
    )
    assert status.returncode == 1 and "failed" in status.stdout
    plan = sweep(*args, "dry_run=true")
    assert "retry after failure" in plan.stdout and "submitted" not in plan.stdout


def test_a_run_longer_than_the_partitions_max_time_finishes_across_jobs(sweep):
    """The partition `short` allows 2 minutes per job; the run needs more (start-up + 75 s of training):
    each job asks for the cap, is warned (USR2) 45 s before its limit, saves, requeues itself, and the
    next job trains what is left of the budget (at most 75 s minus the start-up fit into the first).
    Checkpoint selection is on, and scoring a checkpoint (64 samples of 512 tokens on 20-odd problems) takes
    longer than those 45 s: a save at the signal must not score, or the job dies at its limit unrequeued."""
    args = (
        "name=capped",
        "hydra.launcher.partition=short",
        "hydra.launcher.max_time_min=2",
        "hydra.launcher.signal_delay_s=45",
        "budget.minutes=1.25",
        "data=sums",
        "eval=[sums_heldout]",
        "eval.baseline=false",
        "eval.sampling.n=1",
        "eval.sampling.k=[1]",
        "eval.sampling.max_new_tokens=512",
        "eval.select_on=sums_heldout",
        "eval.selection.n=64",
        "eval.selection.max_new_tokens=512",
        "logger=none",
        "trainer.max_completion_length=8",
        "trainer.num_train_epochs=100",
        "trainer.save_steps=1000",
    )
    plan = sweep(*args, "dry_run=true")
    assert plan.returncode == 0 and "0:02" in plan.stdout, plan.stdout + plan.stderr  # capped at the MaxTime
    submitted = sweep(*args)
    assert submitted.returncode == 0 and "1 jobs queued" in submitted.stdout, submitted.stdout + submitted.stderr
    folder = sweep.runs / "capped"
    done = wait_for(
        lambda: next((s for s in summaries(folder).values() if s["status"] == "completed"), None),
        600,
        "the capped run to complete",
    )
    time_limits = {a["slurm_job_id"] for a in done["attempts"]}
    assert len(done["attempts"]) >= 2 and len(time_limits) == 1  # one job, requeued at its time limit
    steps = [json.loads(line)["step"] for line in (Path(done["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, done["global_step"] + 1))  # no step lost or repeated
    assert done["stop_reason"] == "wall_clock"
    at_signals = {attempt["resumed_from_step"] for attempt in done["attempts"][1:]}  # each job's last save
    assert at_signals and not at_signals & {int(step) for step in done["eval"]["checkpoints"]}  # never scored
    assert "eval/sums_heldout/pass@1" in done["metrics"]
    low, high = training_bounds(done, steps_below=2)  # a step may be cut short by the job's own end
    assert low - 1 <= done["budget"]["training_s"] <= high  # all of it, once


def cached_snapshot(hf_home: Path, kind: str, repo_id: str, rows: list[dict]) -> Path:
    """A Hub repo as huggingface_hub caches it (refs/main -> snapshots/<commit>/), holding train.jsonl."""
    folder = hf_home / "hub" / f"{kind}s--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


def test_a_sweep_for_offline_compute_nodes_submits_only_what_its_cache_holds(sweep, tmp_path):
    """No Hub anywhere (HF_HUB_OFFLINE): with the sweep's Hub datasets in the shared cache the jobs run
    from it; with one missing, nothing is queued and the message names it and the command that fetches it."""
    hf_home = tmp_path / "hf"
    sweep.env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1")
    sums = [{"problem": f"What is {i} + {i % 3}?", "answer": str(i + i % 3)} for i in range(16)]
    cached_snapshot(hf_home, "dataset", "knoveleng/open-rs", sums)
    held_out = [{"problem": f"What is {i} + 5?", "answer": str(i + 5)} for i in range(20, 23)]
    aime = cached_snapshot(hf_home, "dataset", "HuggingFaceH4/aime_2024", held_out)
    args = ("data=open_rs", "eval=[aime24]", "budget.max_steps=2", "logger=none", "trainer.max_completion_length=8")
    done = sweep("name=offline", *args, "hydra.launcher.wait=true")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "all 2 models and datasets of the sweep are in the local cache" in done.stdout
    (summary,) = summaries(sweep.runs / "offline").values()
    assert summary["status"] == "completed" and "eval/aime24/pass@1" in summary["metrics"]

    shutil.rmtree(aime)
    plan = sweep("name=offline_missing", *args, "dry_run=true")
    assert "would fetch dataset HuggingFaceH4/aime_2024 (eval=aime24; size unknown" in plan.stdout
    refused = sweep("name=offline_missing", *args)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "Not submitted" in refused.stderr and "HuggingFaceH4/aime_2024 (eval=aime24)" in refused.stderr
    assert "hf download HuggingFaceH4/aime_2024 --repo-type dataset" in refused.stderr
    assert "submitted" not in refused.stdout and not (sweep.runs / "offline_missing" / ".submitit").exists()


PREFLIGHT_SWEEP = (
    "lora.rank=8,64",
    "data=sums",
    "eval=[sums_heldout]",
    "eval.select_on=sums_heldout",
    "trainer.max_completion_length=16",
    "logger=none",
)


def test_a_preflight_measures_each_model_on_the_cluster_and_the_next_plan_uses_it(sweep):
    """preflight=true on a 2-model x 2-rank sweep: one job per model at its largest rank, each through the time-limit
    path for real (USR2 from SLURM, requeue, the resumed job in the same folder), every field measured; a relaunch
    skips them with their verdicts, and the sweep's plan estimates from them."""
    two_models = tuple(o if not o.startswith("model=") else "model=tiny,tiny_math" for o in SMALL)
    args = ("name=pre", *PREFLIGHT_SWEEP)
    submitted = sweep(*args, "preflight=true", base=two_models)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert "2 preflight jobs queued" in submitted.stdout and "of the sweep's 4 runs" in submitted.stdout

    def verdicts(name: str, count: int):
        found = [json.loads(p.read_text()) for p in (sweep.runs / name / "preflight").glob("*/preflight.json")]
        done = [r for r in found if r.get("verdict")]
        return done if len(done) == count else None

    records = wait_for(lambda: verdicts("pre", 2), 600, "both preflights to end")
    assert sorted(r["model"] for r in records) == ["tiny", "tiny_math"]
    estimate = {"step_s": 7, "save_s": 2, "tokens_per_s": 125}  # budget=smoke's assumptions: none is reported
    for record in records:
        assert record["verdict"] == {"ready": True, "causes": [], "notes": []}, record["verdict"]
        assert "lora.rank=64" in record["arm"]  # the model's most memory-hungry arm
        measured = record["measured"]
        assert measured["attempts"] == 2 and measured["signal_to_resumed_step_s"] > 0  # requeued by SLURM
        assert record["requeue"]["how"].startswith("scancel --signal=USR2") and record["requeue"]["received_after_s"]
        for key in ("step_s", "max_step_s", "full_length_step_s", "save_s", "checkpoint_gb", "requeue_wait_s"):
            assert measured[key] > 0 and measured[key] not in estimate.values(), key
        memory = measured["memory"]
        assert memory["full_length"] and memory["completion_tokens"] == 16 and memory["peak_gb"] > 0
        assert memory["estimate_gb"] > 0
        for bench in (measured["evaluation"]["sums_heldout"], measured["selection"]):
            assert bench["tokens_per_s"] > 0 and 0 < bench["completion_tokens"] <= 16
            assert bench["tokens_per_s"] != estimate["tokens_per_s"]

    again = sweep(*args, "preflight=true", base=two_models)
    assert again.returncode == 0 and "0 preflight jobs to go" in again.stdout and "submitted" not in again.stdout
    assert again.stdout.count("READY") >= 2
    plan = sweep(*args, "dry_run=true", base=two_models)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    rows = [line for line in plan.stdout.splitlines() if line.startswith("run ")]
    assert len(rows) == 4 and all(re.search(r" \d+\.\d+m +\d+m ", row) for row in rows)  # eval h, updates
    assert "measured by the sweep's preflight" in plan.stdout


def test_a_relaunch_skips_runs_whose_jobs_are_still_pending(sweep):
    """4 runs on a node with 2 GPUs: 2 jobs start, 2 wait. Relaunched at once, the sweep submits none of them again:
    the launcher recorded each submission in the run's folder, and the pending ones show as queued."""
    args = ("name=pending", "lora.rank=8,64", "trainer.seed=0,1", "budget.max_steps=50", "eval=[]", "logger=none")
    first = sweep(*args)
    assert first.returncode == 0 and "4 jobs queued" in first.stdout, first.stdout + first.stderr
    jobs = re.findall(r"^submitted (\S+):", first.stdout, re.MULTILINE)
    again = None
    try:
        again = sweep(*args)
        assert again.returncode == 0 and "0 of 4 runs to go" in again.stdout, again.stdout + again.stderr
        assert "submitted" not in again.stdout and "queued as SLURM job" in again.stdout
        status = subprocess.run(
            [sys.executable, "-m", "rlvr_sweeps.sweep", str(sweep.runs / "pending")],
            env=sweep.env,
            capture_output=True,
            text=True,
        )
        assert status.stdout.count("queued") >= 1, status.stdout
    finally:  # this test's jobs, and any a relaunch submitted again
        jobs += re.findall(r"^submitted (\S+):", again.stdout if again else "", re.MULTILINE)
        subprocess.run(["scancel", *jobs], env=sweep.env, capture_output=True)


def two_stage(name: str, rates: str) -> tuple[str, ...]:
    """A two-stage search of ranks 4 and 8 at these rates: 4 steps, paused at 2, one stage-2 seed per rank."""
    return (
        f"name={name}",
        "lora.rank=4,8",
        f"trainer.learning_rate={rates}",
        "budget.max_steps=4",
        "trainer.save_steps=2",
        "eval.select_on=reasoning_gym_heldout",
        "eval.selection.max_problems=8",
        "eval.max_problems=16",
        "search=two_stage",
        "search.milestone=0.5",
        "search.stage2_seeds=1",
        "logger=none",
    )


def test_a_two_stage_search_promotes_in_its_own_job_after_stage_one_and_resumes(sweep):
    """2 ranks x 2 learning rates, wait: false. The command queues stage 1 and a CPU promotion job that depends
    on it (afterany); that job writes search.json and queues stage 2 by itself; relaunching at any point submits
    nothing twice."""
    args = two_stage("search", "0.001,0.01")
    first = sweep(*args)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    folder = sweep.runs / "search"
    queued = json.loads((folder / "search-promotion-job.json").read_text())
    submissions = [json.loads(p.read_text()) for p in folder.glob("*/submission.json")]
    stage1 = {s["job_id"].split("_")[0] for s in submissions}
    assert len(submissions) == 4 and queued["after"] == sorted(stage1)  # afterany on stage 1's jobs
    assert f"promotion job {queued['job_id']} queued after stage 1" in first.stdout

    again = sweep(*args)  # while stage 1 runs or waits: nothing submitted twice, the promotion job kept
    assert again.returncode == 0 and "submitted" not in again.stdout, again.stdout[-3000:]
    assert "queued after stage 1 already" in again.stdout or (folder / "search.json").exists()

    def ended():
        found = summaries(folder)
        states = sorted(s.get("status") for s in found.values())
        return found if states == ["completed"] * 4 + ["paused"] * 2 else None

    runs = wait_for(ended, 600, "stage 2 to end")
    record = json.loads((folder / "search.json").read_text())
    assert record["promotion_job"] == queued["job_id"]  # written by the promotion job, not by a relaunch
    assert [(p["rank"], len(p["learning_rates"])) for p in record["promoted"]] == [(4, 1), (8, 1)]
    continued = [s for s in runs.values() if s["status"] == "completed" and len(s["attempts"]) == 2]
    assert len(continued) == 2 and all(s["global_step"] == 4 and s["paused"]["step"] == 2 for s in continued)
    assert all(s["global_step"] == 2 for s in runs.values() if s["status"] == "paused")

    last = sweep(*args)
    assert last.returncode == 0 and "promoted earlier" in last.stdout and "submitted" not in last.stdout


def test_a_promotion_job_waits_for_stage_one_runs_resubmitted_after_it_was_queued(sweep):
    """A stage-1 job cancelled and resubmitted by a relaunch is not among the queued promotion job's dependencies.
    The promotion job, finding that run still queued, hands the promotion to a job after it rather than promoting
    without its score (which would leave its rank unpromoted). The node is drained while the jobs are arranged."""
    args = two_stage("retry", "0.01")
    folder = sweep.runs / "retry"

    def slurm(*command: str) -> str:
        done = subprocess.run(list(command), env=sweep.env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def job_of(rank: int) -> str:
        path = next(folder.glob(f"*lora.rank={rank},*/submission.json"))
        return json.loads(path.read_text())["job_id"]

    nodes = slurm("sinfo", "-h", "-o", "%N").split()[0]
    slurm("scontrol", "update", f"NodeName={nodes}", "State=DRAIN", "Reason=rlvr-test")
    try:
        first = sweep(*args)  # stage 1 and the promotion job, all pending on the drained node
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        promotion1 = json.loads((folder / "search-promotion-job.json").read_text())["job_id"]
        slurm("scancel", job_of(8))
        wait_for(lambda: job_of(8) not in slurm("squeue", "-h", "-o", "%i"), 60, "the cancelled job to go")
        again = sweep(*args)  # resubmits rank 8's stage-1 run; the promotion job stays queued, after the old jobs
        assert again.returncode == 0 and "queued after stage 1 already" in again.stdout, again.stdout[-3000:]
        retried = job_of(8)
        slurm("scontrol", "hold", retried)
    finally:
        slurm("scontrol", "update", f"NodeName={nodes}", "State=RESUME")

    def handed_on():
        assert not (folder / "search.json").exists(), "promoted while a stage-1 run was still queued"
        record = json.loads((folder / "search-promotion-job.json").read_text())
        return record if record["job_id"] != promotion1 else None

    promotion2 = wait_for(handed_on, 300, "the promotion job to hand the promotion on")
    assert promotion2["after"] == [retried.split("_")[0]] and not (folder / "search.json").exists()
    log = next((folder / ".submitit" / "promotion" / promotion1).glob("*_log.out")).read_text()
    assert "the promotion waits for them" in log
    slurm("scontrol", "release", retried)

    def ended():
        found = summaries(folder)
        return found if sorted(s.get("status") for s in found.values()) == ["completed"] * 4 else None

    wait_for(ended, 600, "stage 2 to end")
    record = json.loads((folder / "search.json").read_text())
    assert record["promotion_job"] == promotion2["job_id"] and record["unscored"] == []
    assert [(p["rank"], p["learning_rates"]) for p in record["promoted"]] == [(4, [0.01]), (8, [0.01])]
