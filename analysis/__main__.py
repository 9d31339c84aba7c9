"""python -m analysis: the study's comparison from a sweep's run folders or from W&B.

    python -m analysis runs/study --out analysis_out
    python -m analysis --wandb my-entity/rlvr-sweeps --group study --out analysis_out --log-to-wandb

From run folders it also writes significance.csv: Pass@1 differences (each rank against the
baseline, each pair of ranks) with paired bootstrap 95% intervals over the problems.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rlvr_sweeps.errors import UserError

from .plots import all_plots
from .sources import load_local, load_wandb
from .tables import all_tables, benchmarks_and_metrics, runs_table

NO_INTERVALS_WANDB = (
    "No per-problem intervals: they need the per-sample records of the local run folders "
    "(eval/<phase>/<benchmark>.jsonl), which W&B does not hold; "
    "run python -m analysis runs/<sweep>."
)
NO_INTERVALS_LOCAL = (
    "No per-problem intervals: no comparison has the per-sample Pass@1 records "
    "(eval/<phase>/<benchmark>.jsonl) of its runs on both sides."
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m analysis", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="*", help="sweep folders, run folders or globs (local source)")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read the runs from W&B instead")
    parser.add_argument("--group", help="W&B group (the sweep's name)")
    parser.add_argument("--tags", nargs="*", help="W&B tags the runs must have one of")
    parser.add_argument("--state", help="W&B run state, e.g. finished")
    parser.add_argument(
        "--out", default="analysis_out", help="folder for the CSV, LaTeX and PNG files (default: analysis_out)"
    )
    parser.add_argument(
        "--collapse-margin",
        type=float,
        default=0.02,
        help="a run collapsed when its final score is below the baseline by more than this (default 0.02 = 2 points)",
    )
    parser.add_argument(
        "--log-to-wandb", action="store_true", help="publish the tables and plots to one W&B analysis run"
    )
    parser.add_argument("--project", default="rlvr-sweeps", help="W&B project for --log-to-wandb with a local source")
    args = parser.parse_args(argv)
    if bool(args.runs) == bool(args.wandb):
        parser.error("give run folders, or --wandb ENTITY/PROJECT (one of the two)")
    return args


def main(argv: list[str] | None = None, api=None) -> int:
    args = parse_args(argv)
    if args.wandb:
        try:
            runs, curves = load_wandb(args.wandb, args.group, args.tags, args.state, api=api)
        except UserError as err:
            print(err, file=sys.stderr)
            return 2
    else:
        runs, curves = load_local(args.runs)
    if runs.empty:
        print("No runs found.", file=sys.stderr)
        return 1
    if len(curves):  # a resumed run logs the redone steps again: keep the last record of each step
        curves = curves.drop_duplicates(subset=["run", "step"], keep="last").sort_values(["run", "step"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tables = all_tables(runs, args.collapse_margin)
    for table in tables:
        print(table.markdown())
        stem = table.name.replace("/", "_").replace("@", "").replace(".", "p")
        table.write_csv(out / f"{stem}.csv")
        (out / f"{stem}.tex").write_text(table.latex())
    if not any(table.name == "significance" for table in tables):
        print(NO_INTERVALS_WANDB if args.wandb else NO_INTERVALS_LOCAL)
    runs_table(runs).to_csv(out / "runs.csv", index=False)
    plots = all_plots(runs, curves, benchmarks_and_metrics(runs), out)
    print(
        f"{len(runs)} runs ({(runs['status'] != 'completed').sum()} not completed); tables (.csv, .tex), runs.csv and "
        f"{len(plots)} plots in {out}/"
    )
    if args.log_to_wandb:
        from .publish import publish

        url = publish(
            tables,
            runs_table(runs),
            plots,
            project=args.wandb.split("/")[-1] if args.wandb else args.project,
            entity=args.wandb.split("/")[0] if args.wandb and "/" in args.wandb else None,
            group=args.group,
            out=out,
        )
        print(f"Published to W&B: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
