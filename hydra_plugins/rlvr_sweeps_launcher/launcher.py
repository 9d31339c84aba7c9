"""Sweep launchers on submitit: plan first, skip what is done, submit the rest, optionally return at once.

Subclasses of hydra-submitit-launcher's launchers. Before submitting they compose every job's
config and print the plan: which runs are new, which resume, which are skipped (completed, or
still alive in SLURM), the training and estimated evaluation hours, the time limit per job and
the cost the budgets imply. `dry_run=true` stops there. With `wait: false` (the SLURM preset) the
command returns once the jobs are queued, printing their job ids and run folders; the jobs record
everything in their run folders.

Job time limits: unless `timeout_min` is set, each job asks for start-up + training + the
evaluation estimate, capped at `max_time_min` (most GPU partitions allow at most 24 h). A run that
needs longer is requeued at its limit (USR2 `signal_delay_s` before it: save, requeue) and resumes
where it saved, up to `max_num_timeout` times.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import OmegaConf

from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher

from .two_stage import TwoStageLaunch

log = logging.getLogger(__name__)


NO_PREFLIGHT = (
    "No preflight in this sweep yet: the estimates above are assumptions (budget.estimate, model.answer_tokens). "
    "Measure them on this cluster first with the same command and preflight=true (one short job per model)."
)


class _SweepLauncherMixin:
    def __init__(self, wait: bool = True, max_time_min: int | None = None, **params: Any) -> None:
        super().__init__(**params)
        self.wait = bool(wait)
        self.max_time_min = int(max_time_min) if max_time_min else None

    def _plan(self, job_overrides: Sequence[Sequence[str]]):
        """The plan of every job, or with preflight=true, of one preflight job per model (planning.preflight):
        (the jobs' overrides, their plans, dry_run, the Hub items they load, preflight)."""
        from rlvr_sweeps.infra.hub import required_items
        from rlvr_sweeps.planning.preflight import hungriest_arms
        from rlvr_sweeps.planning.search import check_search
        from rlvr_sweeps.sweep import plan_preflight, plan_run

        arms = []
        for overrides in job_overrides:
            config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            HydraConfig.instance().set_config(config)  # resolves ${hydra:...} in the folder name
            run_dir = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
            shown = [o for o in filter_overrides(overrides) if not o.startswith("dry_run=")]
            arms.append((overrides, config, run_dir, shown))
        HydraConfig.instance().set_config(self.config)
        self.planned_configs = [config for _, config, _, _ in arms]  # search=two_stage reads the arms' settings
        preflight = any(bool(config.get("preflight")) for _, config, _, _ in arms)
        self.sweep_size = len(arms)
        if preflight:
            arms = [arms[i] for i in hungriest_arms([(a[0], a[1]) for a in arms])]
        cap = self.params.get("timeout_min") or self.max_time_min
        plans, hub_items = [], []
        for _, config, run_dir, shown in arms:
            plan = plan_preflight(config, run_dir, shown) if preflight else plan_run(config, run_dir, shown, cap)
            plans.append(plan)
            if plan.action == "run":
                hub_items += required_items(config)
        dry_run = any(bool(config.dry_run) for _, config, _, _ in arms)
        for _, config, _, _ in arms[:1]:  # before anything is submitted
            check_search(config.get("search"), config.eval)
        return [a[0] for a in arms], plans, dry_run, hub_items, preflight

    def _executor(self, plans):
        import submitit

        init = {
            "folder": self.params["submitit_folder"],
            f"{self._EXECUTOR}_max_num_timeout": self.params.get("max_num_timeout", 0),
        }
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        params = dict(self.params)
        if not params.get("timeout_min"):  # one limit for the job array: the longest job it holds
            params["timeout_min"] = max(p.job_minutes for p in plans if p.action == "run")
        if "signal_delay_s" in params and params["signal_delay_s"] is None:  # sized from step and save times
            params["signal_delay_s"] = math.ceil(max(p.stop_window_s for p in plans if p.action == "run"))
        executor.update_parameters(
            **{
                k if k in base else f"{self._EXECUTOR}_{k}": v
                for k, v in params.items()
                if k not in {"submitit_folder", "max_num_timeout"}
            }
        )
        return executor

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from rlvr_sweeps.infra.hub import prepare
        from rlvr_sweeps.sweep import format_plan, format_preflight_plan, preflight_lines

        search = self.config.get("search") or {}
        if search.get("name") == "two_stage" and not self.config.get("preflight") and not self.config.get("dry_run"):
            return TwoStageLaunch(self).launch(job_overrides, initial_job_idx)
        job_overrides, plans, dry_run, hub_items, preflight = self._plan(job_overrides)
        sweep_dir = str(self.config.hydra.sweep.dir)
        if preflight:
            print(format_preflight_plan(plans, self.sweep_size), flush=True)
        else:
            print(format_plan(plans), flush=True)
            print("\n".join(preflight_lines(sweep_dir) or [NO_PREFLIGHT]), flush=True)
        prepare(hub_items, dry_run=dry_run, log=lambda line: print(line, flush=True))  # compute nodes: no network
        returns = [
            JobReturn(
                overrides=list(o), status=JobStatus.COMPLETED, _return_value={"status": p.status, "plan": asdict(p)}
            )
            for o, p in zip(job_overrides, plans)
        ]
        if dry_run:
            return returns
        submitted = self._submit(job_overrides, plans, initial_job_idx)
        if not submitted:
            return returns
        if not self.wait:
            follow = (
                "relaunch this command (or `python -m rlvr_sweeps.sweep "
                f"{sweep_dir}`) for their verdicts, then plan the sweep with dry_run=true"
                if preflight
                else f"each run's W&B run is named by its overrides, in group {self.config.name!r}"
            )
            print(
                f"{len(submitted)} {'preflight ' if preflight else ''}jobs queued; follow them with `squeue` and "
                f"`python -m rlvr_sweeps.sweep {sweep_dir}`; {follow}.",
                flush=True,
            )
            for i, job in submitted:
                returns[i] = JobReturn(
                    overrides=list(job_overrides[i]),
                    status=JobStatus.COMPLETED,
                    _return_value={"status": "submitted", "job_id": job.job_id, "run_dir": plans[i].run_dir},
                )
            return returns
        job_errors = self._wait(submitted, plans)
        if preflight:
            return self._report_preflight(plans, sweep_dir)
        return self._report(plans, job_errors)

    def _submit(self, job_overrides, plans, initial_job_idx: int) -> list:
        """Submit the plans whose action is "run" (as one job array); [(index in plans, job)]."""
        from rlvr_sweeps.run.record import RunRecord

        todo = [i for i, p in enumerate(plans) if p.action == "run"]
        if not todo:
            return []
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        job_params = [
            (
                list(job_overrides[i]),
                "hydra.sweep.dir",
                initial_job_idx + i,
                f"job_id_for_{initial_job_idx + i}",
                Singleton.get_state(),
            )
            for i in todo
        ]
        jobs = self._executor(plans).map_array(self, *zip(*job_params))
        for i, job in zip(todo, jobs):
            if self._EXECUTOR == "slurm":  # a relaunch skips a run whose job is still pending
                RunRecord(plans[i].run_dir).record_submission(job.job_id)
            print(f"submitted {job.job_id}: {plans[i].overrides or '(defaults)'} -> {plans[i].run_dir}", flush=True)
        return list(zip(todo, jobs))

    @staticmethod
    def _wait(submitted, plans) -> dict:
        """Wait for the jobs; run folder -> the error of each job that failed (what each run did is in its folder)."""
        job_errors = {}
        for i, job in submitted:
            try:
                job.results()
            except Exception as err:  # noqa: BLE001 - submitit's FailedJobError, a killed job...
                job_errors[plans[i].run_dir] = f"job {job.job_id}: {str(err).strip().splitlines()[-1]}"
        return job_errors

    def _report_preflight(self, plans, sweep_dir: str) -> list:
        from rlvr_sweeps.planning.preflight import read
        from rlvr_sweeps.sweep import preflight_lines

        print("\n".join(preflight_lines(sweep_dir)), flush=True)
        records = [read(plan.run_dir) or {} for plan in plans]
        waiting = [plan for plan, record in zip(plans, records) if not (record.get("verdict") or {}).get("ready")]
        return _returns(
            plans,
            records,
            f"{len(waiting)} of {len(plans)} preflights are not ready; their causes and fixes are listed above "
            f"(and in each preflight.json). Fix them and relaunch with preflight=true."
            if waiting
            else None,
        )

    def _report(self, plans, job_errors: dict) -> list:
        from rlvr_sweeps.run.record import RunRecord
        from rlvr_sweeps.sweep import format_status

        summaries = []
        for plan in plans:
            summary = RunRecord(plan.run_dir).read_summary() or {"status": "unknown", "run_dir": plan.run_dir}
            if summary.get("status") not in {"completed", "failed"} and plan.run_dir in job_errors:
                summary = {**summary, "status": "failed", "error": job_errors[plan.run_dir]}  # died unrecorded
            summaries.append(summary)
        print(format_status(summaries), flush=True)
        failed = [s for s in summaries if s.get("status") not in {"completed", "paused"}]
        return _returns(
            plans,
            summaries,
            f"{len(failed)} of {len(plans)} runs did not complete; their errors are listed above and "
            f"kept in each run's summary.json. Relaunching the sweep retries them."
            if failed
            else None,
        )


def _returns(plans, values: list, refusal: str | None) -> list:
    """What the jobs returned, to Hydra; or, when some did not end as they should, the one-line refusal."""
    from rlvr_sweeps.errors import UserError

    if refusal:
        raise UserError(refusal)
    return [
        JobReturn(overrides=p.overrides.split(), status=JobStatus.COMPLETED, _return_value=v)
        for p, v in zip(plans, values)
    ]


class SlurmSweepLauncher(_SweepLauncherMixin, SlurmLauncher):
    pass


class LocalSweepLauncher(_SweepLauncherMixin, LocalLauncher):
    pass
