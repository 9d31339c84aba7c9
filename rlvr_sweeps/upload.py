"""Upload a sweep's runs to W&B from their run folders: the run folder is the authority.

    python -m rlvr_sweeps.upload runs/study              # online: one W&B run per run folder, under the run's id
    python -m rlvr_sweeps.upload runs/study --offline    # no network: one complete offline run per run folder
    wandb sync runs/study/*/wandb-upload/wandb/offline-run-*     # later, from a machine with network

Each attempt of a requeued or preempted run opened its own offline W&B run with the same id, and W&B neither
resumes offline runs nor merges several offline runs of one id at sync time: synced, the dashboard shows a
fragment of the training (wandb issues 2423, 4624, 3841). This command writes each run instead from what its folder
holds: config.yaml, every row of metrics.jsonl once and in order with W&B's step set to the training step, the
evaluations and the summary (as training's own W&B run names them). Safe to repeat: online, only steps the W&B run
does not hold yet are added; offline, the run's upload folder is written anew.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from pathlib import Path

from .errors import UserError
from .run.record import RunRecord, flat_summary

UPLOAD_DIR = "wandb-upload"
NOT_LOGGED = ("step", "training_s")  # the row's step is W&B's step; the training clock is in the summary


def run_folders(paths: list[str]) -> list[Path]:
    """Run folders from sweep folders or run folders (those with a summary.json; evaluations left out)."""
    found = []
    for path in map(Path, paths):
        if not path.exists():
            raise UserError(f"{path} does not exist: give a sweep folder (runs/<name>) or run folders.")
        candidates = (
            [path] if (path / "summary.json").exists() else sorted(p.parent for p in path.glob("*/summary.json"))
        )
        for run_dir in candidates:
            summary = RunRecord(run_dir).read_summary() or {}
            if summary.get("kind") != "evaluation":
                found.append(run_dir)
    return found


def run_id(run_dir: Path, summary: dict) -> str:
    """The W&B id training used (summary.json), or one derived from the folder: the same on every upload."""
    return (summary.get("wandb") or {}).get("run_id") or hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[
        :12
    ]


def rows(record: RunRecord) -> list[dict]:
    """Every logged step once, in order (the last record of a step, as a resume keeps it)."""
    by_step = {int(row["step"]): row for row in record.read_metrics() if isinstance(row.get("step"), (int, float))}
    return [by_step[step] for step in sorted(by_step)]


def upload(run_dir: Path, offline: bool) -> dict:
    """One run folder as one W&B run: what was logged and where."""
    import wandb
    from transformers.integrations.integration_utils import rewrite_logs  # the keys training's W&B run uses

    record = RunRecord(run_dir)
    summary, config = record.read_summary() or {}, record.read_config() or {}
    logger = config.get("logger") or {}
    model, lora = config.get("model") or {}, config.get("lora") or {}
    init = dict(
        id=run_id(run_dir, summary),
        project=logger.get("project") or "rlvr-sweeps",
        entity=logger.get("entity"),
        name=run_dir.name,
        group=str(config.get("name") or run_dir.parent.name),
        tags=[
            str(t) for t in (model.get("name"), f"r{lora.get('rank')}", (config.get("budget") or {}).get("name")) if t
        ],
        config={**config, "overrides": summary.get("overrides"), "memory": summary.get("memory")},
        settings=wandb.Settings(silent=True),
    )
    if offline:
        folder = run_dir / UPLOAD_DIR
        shutil.rmtree(folder, ignore_errors=True)  # written anew: one complete offline run per run folder
        folder.mkdir(parents=True)
        run = wandb.init(mode="offline", dir=str(folder), **init)
        start = 0
    else:
        run = wandb.init(mode="online", resume="allow", **init)
        start = int(run.step or 0)  # what the W&B run holds already is kept: only later steps are added
    run.define_metric("train/global_step")
    run.define_metric("*", step_metric="train/global_step", step_sync=True)
    logged = 0
    for row in rows(record):
        step = int(row["step"])
        if step < start:
            continue
        numbers = {k: v for k, v in row.items() if k not in NOT_LOGGED and isinstance(v, (int, float))}
        run.log({**rewrite_logs(numbers), "train/global_step": step}, step=step)
        logged += 1
    run.summary.update(flat_summary(summary))
    directory = str(Path(run.dir).parent) if offline else run.url
    run.finish(exit_code=int(summary.get("status") == "failed"))
    return {"run": run_dir.name, "steps": logged, "where": directory}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="sweep folders (runs/<name>) or run folders")
    parser.add_argument("--offline", action="store_true", help="write offline runs for a later `wandb sync`")
    args = parser.parse_args(argv)
    try:
        folders = run_folders(args.paths)
        if not folders:
            raise UserError(f"No run folders in {', '.join(args.paths)}.")
        if not args.offline:
            from .infra.wandb_server import has_credentials, wandb_server_answers

            if not has_credentials() or not wandb_server_answers(10.0):
                raise UserError(
                    "W&B cannot be reached from here (or no credentials: WANDB_API_KEY, `wandb login`). Write offline "
                    "runs instead and sync them from a machine with network: python -m rlvr_sweeps.upload "
                    f"{' '.join(args.paths)} --offline"
                )
        for run_dir in folders:
            done = upload(run_dir, args.offline)
            print(f"{done['run']}: {done['steps']} steps -> {done['where']}", flush=True)
    except UserError as err:
        print(err, file=sys.stderr)
        return 2
    if args.offline:
        patterns = [
            str(
                Path(p) / ("" if (Path(p) / "summary.json").exists() else "*") / UPLOAD_DIR / "wandb" / "offline-run-*"
            )
            for p in args.paths
        ]
        print(f"Upload them later, from a machine with network: wandb sync {' '.join(patterns)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
