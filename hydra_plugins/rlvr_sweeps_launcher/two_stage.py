"""search=two_stage on the sweep launchers: stage 1, the promotion, stage 2, with one command.

Every launch derives the search's state from the sweep's arms (the command's overrides) and the sweep folder, so a
relaunch continues wherever the search stands:
1. No search.json yet: stage 1 (each arm with trainer.seed=0..stage1_seeds-1 and budget.stop_at=<milestone>) is
   planned, and what is not paused or done is submitted. With the local launcher (or `wait: true`) the launcher
   waits for it and goes on in process. With the SLURM launcher's `wait: false` it queues a small CPU job with
   `--dependency=afterany` on stage 1's jobs, which relaunches this same command once they have ended: that
   relaunch is the promotion (it submits no stage-1 run again). Should it find stage-1 runs still queued or running
   (a relaunch resubmitted them after it was queued), it queues the promotion again, after them.
2. Stage 1 ended (every run paused, completed or failed): the promotion reads each run's selection score at the
   pause and writes <sweep>/search.json (every arm's score, what was promoted and by which rule). Once written it
   is never redone.
3. Stage 2: the promoted arms' stage-1 runs without the stop (they train on from their pause, the same folders)
   and their new seeds, planned and submitted like any sweep.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus

PROMOTION_ENV = "RLVR_SWEEPS_PROMOTION_JOB"  # set in the promotion job's relaunch: stage 1 is over, promote
PROMOTION_RECORD = "search-promotion-job.json"


class TwoStageLaunch:
    def __init__(self, launcher):
        from rlvr_sweeps.planning.search import TwoStage

        self.launcher = launcher
        self.sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
        self.design = TwoStage.from_config(launcher.config.search)

    def launch(self, job_overrides, initial_job_idx: int) -> list[JobReturn]:
        from rlvr_sweeps.infra.hub import prepare
        from rlvr_sweeps.planning.search import check_arms, read_record, stage1_overrides
        from rlvr_sweeps.sweep import format_plan

        launcher = self.launcher
        check_arms(job_overrides)
        arms = [list(o) for o in job_overrides]
        stage1 = [o for arm in arms for o in stage1_overrides(arm, self.design)]
        overrides1, plans1, _, hub1, _ = launcher._plan(stage1)
        configs1 = launcher.planned_configs
        record = read_record(self.sweep_dir)
        if record is None:
            print(f"search=two_stage, stage 1: every arm to {self.design.milestone:g} of its budget", flush=True)
            print(format_plan(plans1, search=False), flush=True)
            prepare(hub1, dry_run=False, log=lambda line: print(line, flush=True))
            promotion_job = os.environ.get(PROMOTION_ENV)
            waiting = [p for p in plans1 if p.action == "skip" and p.status not in {"paused", "completed"}]
            if promotion_job and waiting and launcher._EXECUTOR == "slurm":
                # a relaunch resubmitted stage-1 runs after this job was queued (a retry): they have not ended,
                # so the promotion waits for them in a job of its own instead of promoting without their scores
                return self._queue_promotion([], waiting, overrides1, plans1, again=True)
            submitted = [] if promotion_job else launcher._submit(overrides1, plans1, initial_job_idx)
            if (submitted or waiting) and not promotion_job:
                if launcher._EXECUTOR == "slurm" and not launcher.wait:
                    return self._queue_promotion(submitted, waiting, overrides1, plans1)
                if waiting:
                    from rlvr_sweeps.errors import UserError

                    raise UserError(
                        f"{len(waiting)} stage-1 runs are still queued or running from an earlier launch "
                        f"({waiting[0].note}); relaunch once they have ended."
                    )
                launcher._wait(submitted, plans1)
            record = self._promote(plans1, configs1)
        else:
            print(f"search=two_stage: promoted earlier ({self.sweep_dir / 'search.json'})", flush=True)
        return self._stage2(arms, configs1, plans1, record, initial_job_idx + len(stage1))

    def _promote(self, plans1, configs1) -> dict:
        from rlvr_sweeps.planning.search import RECORD, promotion, promotion_lines, stage1_run
        from rlvr_sweeps.run.record import RunRecord, atomic_write, now_iso

        runs = [
            stage1_run(
                plan.run_dir,
                RunRecord(plan.run_dir).read_summary() or {},
                str(config.model.name),
                config.lora.get("rank"),
                float(config.trainer.learning_rate),
                int(config.trainer.seed),
            )
            for plan, config in zip(plans1, configs1)
        ]
        record = {
            **promotion(runs, self.design, str(configs1[0].eval.select_on)),
            "promoted_at": now_iso(),
            "promotion_job": os.environ.get(PROMOTION_ENV),
        }
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.sweep_dir / RECORD, json.dumps(record, indent=1) + "\n")
        print("\n".join(promotion_lines(record)), flush=True)
        print(f"written: {self.sweep_dir / RECORD}", flush=True)
        return record

    def _stage2(self, arms, configs1, plans1, record, initial_job_idx: int) -> list[JobReturn]:
        from rlvr_sweeps.infra.hub import prepare
        from rlvr_sweeps.planning.search import promoted_arm, stage2_overrides
        from rlvr_sweeps.sweep import format_plan

        launcher = self.launcher
        seeds = self.design.stage1_seeds
        promoted = [
            arm
            for i, arm in enumerate(arms)
            if promoted_arm(
                record,
                str(configs1[i * seeds].model.name),
                configs1[i * seeds].lora.get("rank"),
                float(configs1[i * seeds].trainer.learning_rate),
            )
        ]
        stage2 = [o for arm in promoted for o in stage2_overrides(arm, self.design)]
        overrides2, plans2, _, hub2, _ = launcher._plan(stage2)
        print(
            f"search=two_stage, stage 2: the promoted arms' {len(promoted) * seeds} stage-1 run(s) train on to the "
            f"full budget, and {len(promoted) * self.design.stage2_seeds} new seed(s) train",
            flush=True,
        )
        print(format_plan(plans2, search=False), flush=True)
        prepare(hub2, dry_run=False, log=lambda line: print(line, flush=True))
        submitted = launcher._submit(overrides2, plans2, initial_job_idx)
        stage2_dirs = {p.run_dir for p in plans2}
        unpromoted = [p for p in plans1 if p.run_dir not in stage2_dirs]
        if submitted and not launcher.wait:
            print(
                f"{len(submitted)} stage-2 jobs queued; follow them with `squeue` and `python -m rlvr_sweeps.sweep "
                f"{self.sweep_dir}`; then `python -m analysis {self.sweep_dir}`.",
                flush=True,
            )
            return [_submitted(o, job) for o, (_, job) in zip(overrides2, submitted)]
        job_errors = launcher._wait(submitted, plans2)
        if unpromoted:  # their scores chose; a failed one was not promoted (search.json), and is not retried
            from rlvr_sweeps.run.record import RunRecord
            from rlvr_sweeps.sweep import format_status

            found = [RunRecord(p.run_dir).read_summary() or {"run_dir": p.run_dir} for p in unpromoted]
            print("stage 1, not promoted:\n" + format_status(found), flush=True)
        return launcher._report(plans2, job_errors)

    def _queue_promotion(self, submitted, waiting, overrides1, plans1, again: bool = False) -> list[JobReturn]:
        """The promotion as a small CPU job after every stage-1 job (afterany: failed ones too), once; `again`: from
        the promotion job itself, which found stage-1 runs still queued or running (resubmitted after it was queued)
        and hands the promotion to a job after them."""
        import submitit

        from rlvr_sweeps.run.record import RunRecord, atomic_write, now_iso
        from rlvr_sweeps.sweep import slurm_job_alive

        path = self.sweep_dir / PROMOTION_RECORD
        earlier = _read(path)
        if not again and earlier.get("job_id") and slurm_job_alive(earlier["job_id"]):
            print(f"the promotion job {earlier['job_id']} is queued after stage 1 already.", flush=True)
            return [_submitted(o, job) for o, (_, job) in zip(overrides1, submitted)]
        after = {job.job_id.split("_")[0] for _, job in submitted}
        for plan in waiting:
            record = RunRecord(plan.run_dir)
            job = record.unstarted_job() or (record.read_summary() or {}).get("slurm_job_id")
            if job:
                after.add(str(job).split("_")[0])
        params = self.launcher.params
        executor = submitit.AutoExecutor(
            folder=str(self.sweep_dir / ".submitit" / "promotion" / "%j"), cluster="slurm"
        )
        executor.update_parameters(
            name=f"{params.get('name') or 'rlvr'}-promotion",
            timeout_min=60,
            nodes=1,
            tasks_per_node=1,
            cpus_per_task=1,
            mem_gb=4,
            **{f"slurm_{k}": params[k] for k in ("partition", "account", "qos") if params.get(k)},
            slurm_additional_parameters={"dependency": "afterany:" + ":".join(sorted(after))},
        )
        job = executor.submit(promotion_job, list(sys.argv), os.getcwd())
        atomic_write(
            path, json.dumps({"job_id": job.job_id, "after": sorted(after), "submitted_at": now_iso()}) + "\n"
        )
        if again:
            print(
                f"{len(waiting)} stage-1 run(s) are still queued or running (resubmitted after this promotion job was "
                f"queued): the promotion waits for them as job {job.job_id}, after {', '.join(sorted(after))}.",
                flush=True,
            )
            return []
        print(
            f"promotion job {job.job_id} queued after stage 1's jobs ({', '.join(sorted(after))}): it promotes each "
            f"rank's best learning rate(s) into {self.sweep_dir / 'search.json'} and submits stage 2. Relaunch this "
            "command at any time: it continues wherever the search stands.",
            flush=True,
        )
        return [_submitted(o, job) for o, (_, job) in zip(overrides1, submitted)]


def promotion_job(argv: list[str], cwd: str) -> None:
    """The promotion, on a CPU node after stage 1: the sweep's own command, relaunched (it finds stage 1 over,
    writes search.json and submits stage 2). The job's SLURM variables stay out of the jobs it submits."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_")) or k == "SLURM_CONF"}
    env[PROMOTION_ENV] = os.environ.get("SLURM_JOB_ID", "local")
    done = subprocess.run([sys.executable, *argv], cwd=cwd, env=env)
    if done.returncode:
        raise RuntimeError(f"the promotion's relaunch ({' '.join(argv)}) ended with status {done.returncode}")


def _submitted(overrides, job) -> JobReturn:
    return JobReturn(
        overrides=list(overrides),
        status=JobStatus.COMPLETED,
        _return_value={"status": "submitted", "job_id": job.job_id},
    )


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
