"""Records that never lie (rlvr_sweeps.run.record, rlvr_sweeps.run.lease): a run resumes only with the settings it
trained with, one trainer holds a run folder at a time (and a dead one does not hold it forever), and a run
trained under two versions says so."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import ROOT, environment, launch_env, train_in_process
from rlvr_sweeps.errors import UserError
from rlvr_sweeps.run.record import config_changes, mixed_versions

QUICK = ("model=tiny", "eval=[]", "logger=none", "trainer.max_completion_length=8")


def test_only_settings_that_change_the_result_count_as_changes():
    saved = {
        "name": "a",
        "logger": {"mode": "offline"},
        "trainer": {"learning_rate": 5e-5, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 4},
        "eval": {"batch_size": 64, "seed": 0},
    }
    now = {
        "name": "b",  # where it is logged: not the result
        "logger": {"mode": "online"},
        "trainer": {"learning_rate": 3e-3, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 16},
        "eval": {"batch_size": 8, "seed": 0, "max_problems": None},  # a key added since: null is no change
    }
    # the split guards.memory fits on another node makes the same 32 completions per update: no change
    assert config_changes(saved, now) == [("trainer.learning_rate", 5e-5, 3e-3)]
    now["trainer"]["gradient_accumulation_steps"] = 8
    assert ("trainer.completions_per_update", 32, 16) in config_changes(saved, now)


def test_a_resume_with_changed_settings_is_refused_and_the_record_keeps_what_it_trained_with(tmp_path, model_cache):
    runs = tmp_path / "runs"
    first = train_in_process(runs, model_cache, *QUICK, "budget.max_steps=2", "trainer.save_steps=1")
    run_dir = first["run_dir"]
    # an interrupted run whose trainer.learning_rate was 3e-3 (then a config file was edited back to its default)
    config_path = os.path.join(run_dir, "config.yaml")
    config = yaml.safe_load(open(config_path))
    config["trainer"]["learning_rate"], config["lora"]["effective_learning_rate"] = 0.003, 0.003
    config["logger"]["project"] = "elsewhere"  # where it logged: may differ
    open(config_path, "w").write(yaml.safe_dump(config, sort_keys=False))
    summary_path = os.path.join(run_dir, "summary.json")
    summary = json.load(open(summary_path))
    json.dump({**summary, "status": "interrupted"}, open(summary_path, "w"))
    with pytest.raises(UserError) as refused:
        train_in_process(runs, model_cache, *QUICK, "budget.max_steps=2", "trainer.save_steps=1")
    message = str(refused.value)
    assert "trainer.learning_rate: 0.003 then, 5e-05 now" in message and "logger" not in message
    assert "Restore them" in message and "another name=" in message and "\n" not in message
    assert yaml.safe_load(open(config_path))["trainer"]["learning_rate"] == 0.003  # the record is not rewritten


def test_the_attempts_of_a_run_under_two_versions_are_named():
    attempts = [
        {"versions": {"trl": "1.13.0", "torch": "2.10.0"}, "git_commit": "abc"},
        {"versions": {"trl": "1.16.0", "torch": "2.10.0"}, "git_commit": "abc"},
    ]
    assert mixed_versions(attempts) == {"trl": ["1.13.0", "1.16.0"]}
    assert mixed_versions(attempts[:1]) == {}


def start(tmp_path, model_cache, *args):
    command = [sys.executable, str(ROOT / "launch.py"), *QUICK, *args]
    env = launch_env(tmp_path / "runs", model_cache)
    return subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_one_trainer_per_run_folder_and_a_killed_holder_is_taken_over(tmp_path, model_cache):
    """A second launch of a run that is training refuses in one line naming the holder; once the holder is killed
    with SIGKILL (its lease file stays behind), the same command takes the run over and finishes it."""
    from rlvr_sweeps.train import train  # noqa: F401 - imported before the holder starts: the refusal is quick

    args = ("budget.max_steps=60", "trainer.save_steps=2")
    first = start(tmp_path, model_cache, *args)
    metrics = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and (metrics is None or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.2)
        metrics = next(iter((tmp_path / "runs").glob("default/*/metrics.jsonl")), None)
    lease = metrics.parent / "lease.json"
    assert json.loads(lease.read_text())["pid"] == first.pid
    with pytest.raises(UserError) as refused:
        train_in_process(tmp_path / "runs", model_cache, *QUICK, *args)
    message = str(refused.value)
    assert f"pid {first.pid} on" in message and "one trainer at a time" in message and "\n" not in message
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)
    assert lease.exists()  # SIGKILL leaves it behind: only its heartbeat stops
    done = train_in_process(tmp_path / "runs", model_cache, *QUICK, *args)  # its pid is gone: taken over
    assert done["status"] == "completed" and done["global_step"] == 60 and len(done["attempts"]) == 2
    assert not lease.exists()  # released at the end
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == list(range(1, 61))  # every step once


def test_a_lease_whose_holder_stopped_renewing_expires(tmp_path):
    """A holder on another node (its pid cannot be asked): refused while its heartbeat is fresh, taken over once the
    lease expired; the heartbeat thread renews a held lease."""
    from rlvr_sweeps.run.lease import RunLease

    other = {"token": "x", "host": "node-7", "pid": 1, "slurm_job_id": "99", "since": "then"}
    path = tmp_path / "lease.json"
    path.write_text(json.dumps({**other, "heartbeat": time.time()}))
    with environment(RLVR_SWEEPS_LEASE_S="1"):
        with pytest.raises(UserError, match="pid 1 on node-7, SLURM job 99"):
            RunLease(tmp_path).acquire()
        time.sleep(1.2)
        with RunLease(tmp_path) as lease:
            first = json.loads(path.read_text())["heartbeat"]
            time.sleep(0.6)  # a heartbeat every quarter of the lease
            assert json.loads(path.read_text())["token"] == lease.token
            assert json.loads(path.read_text())["heartbeat"] > first
    assert not path.exists()


def test_a_submission_counts_as_unstarted_only_until_a_job_writes_the_summary(tmp_path):
    """A job that failed is still COMPLETING in SLURM when the launcher reports it: the plan must read its summary
    (retry after failure), not the submission (queued)."""
    from rlvr_sweeps.run.record import RunRecord

    record = RunRecord(tmp_path)
    assert record.unstarted_job() is None
    record.record_submission("41")
    assert record.unstarted_job() == "41"  # nothing written since: pending
    record.update_summary(status="failed", error="boom")
    assert record.unstarted_job() is None  # the job started and wrote its summary
    time.sleep(1.1)  # timestamps are in seconds
    record.record_submission("42")  # the relaunch resubmits it
    assert record.unstarted_job() == "42"
