"""python -m analysis: the study's comparison from a sweep's run folders or from W&B.

    python -m analysis runs/study --out analysis_out
    python -m analysis --wandb my-entity/rlvr-sweeps --group study --out analysis_out --log-to-wandb

Every comparison (each rank against its untrained init, each pair of ranks) treats the training run
as the unit: significance.csv has the seed-level intervals and the `*` decisions (>= 3 runs a side, Holm's
correction), runs_needed.csv the runs per arm a comparison would need (--min-effect POINTS to plan for a
given difference). From run folders the evaluation noise of the runs at hand (a paired bootstrap over
problems) is added beside them; a damaged run folder is named and left out.

A W&B Report and a saved workspace view of the sweep (analysis/report.py), from either source:

    python -m analysis runs/study --wandb my-entity/rlvr-sweeps --report-json report.json   # offline
    python -m analysis runs/study --wandb my-entity/rlvr-sweeps --report --workspace        # save both
    python -m analysis --wandb my-entity/rlvr-sweeps --group study --report                 # runs from W&B

--wandb ENTITY/PROJECT names the W&B project: the runs are read from it when no run folders are
given; with run folders it only names where --report, --workspace and --log-to-wandb go.
--report-json / --workspace-json write the report / workspace as JSON without any network (the
report's panels use only keys the runs logged; a key none logged stops with its name and what they
did log); --report / --workspace save them (same title: updated) and print their URL. The W&B group
(the sweep's name) is --group, or the name of the run folders' sweep.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

from rlvr_sweeps.errors import UserError

from .budget_axis import budget_rows
from .plots import all_plots
from .sources import load_local, load_wandb
from .tables import all_tables, benchmarks_and_metrics, runs_table
from .two_stage import verdict_rows

NO_INTERVALS_WANDB = (
    "No evaluation-noise intervals: they need the per-sample records of the local run folders "
    "(eval/<phase>/<benchmark>.jsonl), which W&B does not hold; run python -m analysis runs/<sweep>. "
    "The seed-level comparisons need only the runs' summaries: they are complete."
)
NO_INTERVALS_LOCAL = "No comparison: no init has a completed run with Pass@1 on a benchmark."


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m analysis", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="*", help="sweep folders, run folders or globs (local source)")
    parser.add_argument(
        "--wandb",
        metavar="ENTITY/PROJECT",
        help="the W&B project: read the runs from it (without run folders); where reports and views go",
    )
    parser.add_argument("--group", help="W&B group (the sweep's name)")
    parser.add_argument("--tags", nargs="*", help="W&B tags the runs must have one of")
    parser.add_argument("--state", help="W&B run state, e.g. finished")
    parser.add_argument(
        "--out",
        default="analysis_out",
        help="folder for the CSV, Markdown, LaTeX and PNG files (default: analysis_out)",
    )
    parser.add_argument(
        "--collapse-margin",
        type=float,
        default=0.02,
        help="a run collapsed when its final score is below the baseline by more than this (default 0.02 = 2 points)",
    )
    parser.add_argument(
        "--min-effect",
        type=float,
        metavar="POINTS",
        help="plan the runs each comparison needs for this Pass@1 difference (points) instead of the observed one",
    )
    parser.add_argument(
        "--log-to-wandb", action="store_true", help="publish the tables and plots to one W&B analysis run"
    )
    parser.add_argument("--project", default="rlvr-sweeps", help="W&B project for --log-to-wandb with a local source")
    parser.add_argument("--report", action="store_true", help="save the sweep's W&B Report and print its URL")
    parser.add_argument("--workspace", action="store_true", help="save the sweep's W&B workspace view, print its URL")
    parser.add_argument("--report-json", metavar="FILE", help="write the report as JSON (no network)")
    parser.add_argument("--workspace-json", metavar="FILE", help="write the workspace view as JSON (no network)")
    parser.add_argument("--title", help="title of the report and view (default: '<group>: LoRA rank x init')")
    parser.add_argument("--benchmarks", nargs="+", help="benchmarks of the report (default: every one evaluated)")
    args = parser.parse_args(argv)
    if not args.runs and not args.wandb:
        parser.error("give run folders, or --wandb ENTITY/PROJECT")
    if args.runs and args.wandb and not (wants_views(args) or args.log_to_wandb):
        parser.error("with run folders, --wandb only names where --report, --workspace, --log-to-wandb go: add one")
    if wants_views(args) and (not args.wandb or args.wandb.count("/") != 1):
        parser.error("--report, --workspace and their JSON need --wandb ENTITY/PROJECT: the project they belong to")
    return args


def wants_views(args: argparse.Namespace) -> bool:
    return bool(args.report or args.workspace or args.report_json or args.workspace_json)


OFFLINE_VIEWS = (
    " Without W&B: python -m analysis runs/<sweep> --wandb ENTITY/PROJECT --report-json report.json "
    "writes the report from the run folders, with the tables and plots in analysis_out/."
)


def build_views(args: argparse.Namespace, runs, tables, logged) -> list:
    """The report and workspace asked for, checked against the logged keys (no network); JSON written."""
    from .report import Views, build_report, build_workspace, local_group, to_json

    views = Views(runs, tables, logged, args.wandb, args.group or local_group(runs), args.title, args.benchmarks)
    made = []
    if args.report or args.report_json:
        made.append((build_report(views), args.report_json, args.report))
    if args.workspace or args.workspace_json:
        made.append((build_workspace(views), args.workspace_json, args.workspace))
    for view, json_path, _ in made:
        if json_path:
            Path(json_path).write_text(json.dumps(to_json(view), indent=1) + "\n")
            print(f"Wrote the {type(view).__name__.lower()} as JSON: {json_path}")
    return [view for view, _, saving in made if saving]


def main(argv: list[str] | None = None, api=None) -> int:
    args = parse_args(argv)
    kept = None
    if not args.runs:
        try:
            if wants_views(args):  # keep the W&B runs for the keys they logged
                from .report import KeepRuns, connect

                api = kept = KeepRuns(api if api is not None else connect())
            runs, curves = load_wandb(args.wandb, args.group, args.tags, args.state, api=api)
        except UserError as err:
            print(f"{err}{OFFLINE_VIEWS if wants_views(args) else ''}", file=sys.stderr)
            return 2
    else:
        missing = [path for path in args.runs if not glob.glob(path)]
        if missing:
            print(
                f"{', '.join(missing)}: no such folder. Give a sweep folder (runs/<sweep>), run folders or a glob.",
                file=sys.stderr,
            )
            return 2
        runs, curves = load_local(args.runs, warn=lambda line: print(line, file=sys.stderr))
    if runs.empty:
        print("No runs found.", file=sys.stderr)
        return 1
    if len(curves):  # a resumed run logs the redone steps again: keep the last record of each step
        curves = curves.drop_duplicates(subset=["run", "step"], keep="last").sort_values(["run", "step"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    min_effect = None if args.min_effect is None else args.min_effect / 100
    levels = budget_rows(runs, curves, warn=lambda line: print(line, file=sys.stderr))  # a row per run and budget
    every_run = levels[levels["milestone"].isna()]  # each run at its own budget
    runs = verdict_rows(every_run)  # the views and plots by rank: a two-stage search's stage-2 runs
    tables = all_tables(levels, args.collapse_margin, min_effect)
    for table in tables:
        print(table.markdown())
        stem = table.name.replace("/", "_").replace("@", "").replace(".", "p")
        table.write_csv(out / f"{stem}.csv")
        (out / f"{stem}.tex").write_text(table.latex())
        (out / f"{stem}.md").write_text(table.markdown())
    found = {table.name: table for table in tables}
    if "significance" not in found:
        print(NO_INTERVALS_LOCAL)
    elif not args.runs:
        print(NO_INTERVALS_WANDB)
    if "runs_needed" in found:
        needed = found["runs_needed"].csv
        print(
            "Runs needed:\n"
            + "\n".join(
                f"- {f'{setting}: ' if setting else ''}{line}"
                for setting, line in zip(needed["setting"], needed["line"])
            )
        )
    runs_table(levels).to_csv(out / "runs.csv", index=False)
    plots = all_plots(runs, curves, benchmarks_and_metrics(runs), out, levels)
    print(
        f"{len(runs)} runs ({(runs['status'] != 'completed').sum()} not completed); tables (.csv, .md, .tex), "
        f"runs.csv and {len(plots)} plots in {out}/"
    )
    to_save = []
    if wants_views(args):  # before anything is published: a key no run logged stops here
        from .report import local_keys, wandb_keys

        try:
            to_save = build_views(args, runs, tables, wandb_keys(kept.found) if kept else local_keys(every_run))
        except UserError as err:
            print(err, file=sys.stderr)
            return 2
    if args.log_to_wandb:
        from .publish import publish

        url = publish(
            tables,
            runs_table(levels),
            plots,
            project=args.wandb.split("/")[-1] if args.wandb else args.project,
            entity=args.wandb.split("/")[0] if args.wandb and "/" in args.wandb else None,
            group=args.group,
            out=out,
        )
        print(f"Published to W&B: {url}")
    for view in to_save:
        from .report import save

        try:
            print(f"Saved the {type(view).__name__.lower()} to W&B: {save(view, out, kept.api if kept else api)}")
        except UserError as err:
            print(err, file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
