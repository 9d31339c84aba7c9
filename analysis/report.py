"""A sweep as a W&B Report (--report) or a saved workspace view (--workspace), built with wandb-workspaces.

Both are built offline, as objects, from the runs and the keys they logged, and can be written as JSON
(--report-json FILE, --workspace-json FILE) without any network; --report / --workspace save them to the
W&B project named by --wandb ENTITY/PROJECT (a report or view of the same title is updated, not duplicated).

The report: a header (the sweep's group, runs, initializations, ranks, budget, benchmarks); per
initialization (config model.name) a panel grid over the group's runs of that init, grouped by
config lora.rank: line plots of reward, accuracy reward, completion length (and KL when the runs logged it)
over train/global_step, one line per rank (mean over seeds, min-max band), and bar plots of the untrained
and final Pass@k (baseline/<bench>/pass@k, eval/<bench>/pass@k) and of the change (delta/<bench>/pass@k)
per benchmark, one bar per rank (mean, standard error), and with budget.milestones Pass@k at each budget level
(milestone/<f>/eval/<bench>/pass@k, then the whole budget's); then the analysis tables as Markdown. The
workspace: the same panels over the group's runs, grouped by model.name then lora.rank, each rank in one
color, and the tables as Markdown panels.

Every panel key is one the runs logged, the names W&B holds: line plots use history keys (what
transformers' WandbCallback logs: the trainer's logs with a "train/" prefix, step key train/global_step),
bar plots summary keys (flat_summary: eval/..., baseline/..., delta/...). A key no run logged stops the
build with a UserError naming it and what the runs did log, before anything touches the network.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import wandb_workspaces.reports.v2 as wr
import wandb_workspaces.workspaces as ws
from wandb_workspaces import expr

from rlvr_sweeps.errors import UserError
from rlvr_sweeps.infra.wandb_server import public_api
from rlvr_sweeps.run.record import flat_summary

from .comparisons import column_label, rank_order

STEP = "train/global_step"  # WandbCallback: define_metric("*", step_metric="train/global_step")
CURVES = (
    ("Reward", "train/reward"),
    ("Accuracy reward", "train/rewards/accuracy_reward/mean"),
    ("Completion length (tokens)", "train/completions/mean_length"),
    ("KL to the reference model", "train/kl"),
)
ONLY_WHEN_LOGGED = {"train/kl"}  # TRL logs kl only with trainer.beta > 0 (the study's beta is 0)
INIT, RANK = "model.name", "lora.rank"  # the runs' config keys (conf/model, conf/lora)
LOCAL_ONLY = {"step", "training_s"}  # metrics.jsonl fields that MetricsCallback adds to the trainer's logs
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")  # plots.py's


@dataclass
class Logged:
    """The keys a sweep's runs logged to W&B: history (per step) and summary (per run)."""

    history: set[str]
    summary: set[str]


def local_keys(runs: pd.DataFrame) -> Logged:
    """The keys W&B holds for local run folders: metrics.jsonl through transformers' own renaming
    (rewrite_logs, as its WandbCallback logs them), and summary.json through flat_summary (as
    tracking.finish writes the W&B summary)."""
    from transformers.integrations.integration_utils import rewrite_logs

    history, summary = set(), set()
    for folder in map(Path, runs["path"].dropna() if "path" in runs else []):
        metrics = folder / "metrics.jsonl"
        for line in metrics.read_text().splitlines() if metrics.exists() else []:
            record = {k: v for k, v in json.loads(line).items() if k not in LOCAL_ONLY and v is not None}
            history |= {*rewrite_logs(record), STEP}
        flat = flat_summary(json.loads((folder / "summary.json").read_text()))
        summary |= {key for key, value in flat.items() if value is not None}
    return Logged(history, summary)


def wandb_keys(found: list) -> Logged:
    """The keys of W&B runs (wandb.apis.public.Run): their summary and their history keys."""
    history, summary = set(), set()
    for run in found:
        if (run.config or {}).get("kind") == "analysis":
            continue
        summary |= {key for key, value in dict(run.summary).items() if value is not None and key[0] != "_"}
        keys = getattr(run, "history_keys", None)  # W&B's historyKeys: {"keys": {key: ...}, "lastStep": n}
        if keys is None and hasattr(run, "load_full_data"):  # a lazy run without its full data yet
            run.load_full_data()
            keys = getattr(run, "history_keys", None)
        history |= set((json.loads(keys) if isinstance(keys, str) else keys or {}).get("keys") or {})
    return Logged(history, summary)


class KeepRuns:
    """A wandb.Api that remembers the runs it returned, for their keys."""

    def __init__(self, api):
        self.api, self.found = api, []

    def runs(self, path, filters=None):
        found = list(self.api.runs(path, filters=filters))
        self.found += found
        return found


def _missing(key: str, kind: str, logged: set[str], panel: str) -> UserError:
    """The key, and what the runs logged: the keys of its family (eval/..., train/...), else every family."""
    near = sorted(k for k in logged if k.split("/")[0] == key.split("/")[0])
    if not near:
        families = {k.split("/")[0] for k in logged}
        near = sorted(f"{f}/*" if any(k.startswith(f"{f}/") for k in logged) else f for f in families)
    shown = ", ".join(near[:40]) + (f", ... ({len(near)} in all)" if len(near) > 40 else "") if near else "none"
    return UserError(
        f"The panel '{panel}' needs the {kind} key {key}, which no run of the sweep logged. "
        f"The runs logged these {kind} keys: {shown}."
    )


def check_keys(panels: list, logged: Logged) -> None:
    """Every key of every panel is one the runs logged: history keys for line plots, summary keys for
    bar plots (W&B plots a run's summary value there)."""
    for panel in panels:
        if isinstance(panel, wr.LinePlot):
            needs = [(key, "history") for key in [panel.x, *panel.y]]
        else:
            needs = [(key, "summary") for key in panel.metrics]
        for key, kind in needs:
            if key not in getattr(logged, kind):
                raise _missing(key, kind, getattr(logged, kind), panel.title)


def pass_metrics(logged: Logged, benchmarks: list[str] | None) -> list[tuple[str, str]]:
    """(benchmark, pass@k) pairs of the report: those of the named benchmarks, or of every benchmark the runs
    evaluated (eval/<benchmark>/pass@k in their summaries); none is an error."""
    parts = (key.split("/") for key in logged.summary)
    found = {(p[1], p[2]) for p in parts if len(p) == 3 and p[0] == "eval" and p[2].startswith("pass@")}
    named = benchmarks or sorted({bench for bench, _ in found})
    if not named:
        raise _missing("eval/<benchmark>/pass@1", "summary", logged.summary, "Pass@k by rank")
    for bench in named:
        if not any(b == bench for b, _ in found):
            raise _missing(f"eval/{bench}/pass@1", "summary", logged.summary, f"{bench} Pass@k by rank")
    return sorted((bm for bm in found if bm[0] in named), key=lambda bm: (named.index(bm[0]), int(bm[1][5:])))


def _layout(index: int) -> wr.Layout:
    return wr.Layout(x=(index % 3) * 8, y=(index // 3) * 6, w=8, h=6)


def panels(logged: Logged, metrics: list[tuple[str, str]], by_rank: bool, limit: int) -> list:
    """Line plots of the training curves, then per benchmark and Pass@k the untrained and final scores and
    the change; grouped by lora.rank when `by_rank` (the report; the workspace groups in its runset)."""
    group = dict(groupby=wr.Config(RANK), groupby_aggfunc="mean") if by_rank else {}
    band, error = (dict(groupby_rangefunc="minmax"), dict(groupby_rangefunc="stderr")) if by_rank else ({}, {})
    made = [
        wr.LinePlot(title=title, x=STEP, y=[key], title_x="training step", max_runs_to_show=limit, **group, **band)
        for title, key in CURVES
        if key not in ONLY_WHEN_LOGGED or key in logged.history
    ]
    for bench, metric in metrics:
        for title, keys in (
            (f"{bench} {metric}: untrained and final", [f"baseline/{bench}/{metric}", f"eval/{bench}/{metric}"]),
            (f"{bench} {metric}: change against the untrained model", [f"delta/{bench}/{metric}"]),
        ):
            bars = wr.BarPlot(title=title, metrics=keys, orientation="v", max_runs_to_show=limit, **group, **error)
            made.append(bars)
        levels = budget_level_keys(logged, bench, metric)
        if len(levels) > 1:  # budget.milestones: the shorter budgets' scores beside the run's own, by rank
            title = f"{bench} {metric} at each budget level (milestones, then the whole budget)"
            made.append(
                wr.BarPlot(title=title, metrics=levels, orientation="v", max_runs_to_show=limit, **group, **error)
            )
    for index, panel in enumerate(made):
        panel.layout = _layout(index)
    return made


SEED, LEARNING_RATE = "trainer.seed", "trainer.learning_rate"
SELECTION = "paused/selection_score"  # a stage-1 run's selection score at its pause (flat_summary)


def stage2_seed(runs: pd.DataFrame) -> int | None:
    """search=two_stage: the first seed of stage 2 (the stage-1 seeds are those below it); None otherwise."""
    if "search_stage" not in runs or not (runs["search_stage"] == 2).any():
        return None
    return int(runs.loc[runs["search_stage"] == 2, "seed"].min())


def landscape_blocks(entity, project, group, init, first_new_seed: int, logged: Logged, limit: int) -> list:
    """The stage-1 landscape of a two-stage search: each (rank, learning rate) arm's selection score at the
    milestone, one bar per arm (the search's tables below mark each rank's choice)."""
    runset = wr.Runset(
        entity=entity,
        project=project,
        name=f"{group}: {init} (stage 1)",
        filters=expr.And(
            expr.Metric("Group") == group,
            expr.Config(config_key(INIT)) == init,
            expr.Config(config_key(SEED)) <= first_new_seed - 1,
        ),
        groupby=[f"config.{RANK}", f"config.{LEARNING_RATE}"],
    )
    bars = wr.BarPlot(
        title="Stage 1: the selection score at the milestone, by LoRA rank and learning rate",
        metrics=[SELECTION],
        orientation="v",
        max_runs_to_show=limit,
        groupby_aggfunc="mean",
        groupby_rangefunc="minmax",
    )
    check_keys([bars], logged)
    bars.layout = _layout(0)
    return [wr.H3(f"{init}: the stage-1 landscape"), wr.PanelGrid(runsets=[runset], panels=[bars])]


def budget_level_keys(logged: Logged, bench: str, metric: str) -> list[str]:
    """The summary keys of `metric` at each budget level the runs logged: milestone/<f>/eval/<bench>/<metric> by
    fraction (rlvr_sweeps.run.milestones), then eval/<bench>/<metric> (the whole budget)."""
    tail = f"/eval/{bench}/{metric}"
    found = [k for k in logged.summary if k.startswith("milestone/") and k.endswith(tail) and k.count("/") == 4]
    return sorted(found, key=lambda k: float(k.split("/")[1])) + [f"eval/{bench}/{metric}"]


def config_key(key: str) -> str:
    """A config key as W&B's filters and groupings address it ("model.name" -> "model.value.name": the
    config is logged as nested dicts), by wandb-workspaces' own conversion."""
    return expr.groupby_str_to_key(f"config.{key}").name


def header(runs: pd.DataFrame, group: str, logged: Logged, metrics: list[tuple[str, str]]) -> str:
    status = runs["status"].fillna("unknown").value_counts()
    ranks = ", ".join(column_label(rank) for rank in rank_order(runs["rank"].unique()))
    budget = ", ".join(sorted(str(b) for b in runs["budget"].dropna().unique())) if "budget" in runs else "?"
    hours, cost = runs["gpu_hours"].sum(), runs["cost_usd"].sum()
    benchmarks = "; ".join(f"{b} ({', '.join(m for bb, m in metrics if bb == b)})" for b in dict(metrics))
    kl = "" if "train/kl" in logged.history else " KL is left out: no run logged train/kl (TRL logs it with beta > 0)."
    return "\n".join(
        [
            f"**Sweep `{group}`** (the W&B group): {len(runs)} runs ("
            + ", ".join(f"{count} {name}" for name, count in status.items())
            + ").",
            "",
            f"- Initializations (`{INIT}`): {', '.join(sorted(runs['init'].dropna().unique()))}",
            f"- LoRA ranks (`{RANK}`): {ranks}",
            f"- Budget (`budget.name`): {budget}; {hours:.3f} device-hours and ${cost:.4f} for the whole sweep",
            f"- Benchmarks: {benchmarks}",
            "",
            "Line plots: one line per rank, the mean over seeds with its min-max band, over optimizer steps. "
            "Bars: one per rank, the mean over seeds with its standard error." + kl,
        ]
    )


@dataclass(frozen=True)
class Views:
    """What the report and the workspace are built from."""

    runs: pd.DataFrame
    """The sweep's runs (analysis.sources)."""
    tables: list
    """The comparison tables, shown as markdown."""
    logged: Logged
    """The keys W&B holds for these runs: every panel is checked against them."""
    target: str
    """ENTITY/PROJECT."""
    group: str
    """The W&B group of the sweep (its name)."""
    title: str | None = None
    benchmarks: list[str] | None = None
    """The benchmarks to show (None: every one logged)."""


def build_report(views: Views) -> wr.Report:
    """The sweep's report (no network): checked against the logged keys before it is returned."""
    runs, tables, logged, group, title = views.runs, views.tables, views.logged, views.group, views.title
    entity, project = views.target.split("/")
    benchmarks = views.benchmarks
    metrics = pass_metrics(logged, benchmarks)
    check_keys(panels(logged, metrics, True, len(runs)), logged)
    blocks = [wr.MarkdownBlock(header(runs, group, logged, metrics)), wr.TableOfContents()]
    first_new_seed = stage2_seed(runs)
    # search.promote above 1: stage 2 trained several rates per rank, one of them chosen (the tables say which);
    # grouped by rate too, so that no panel pools the chosen rate's runs with another's
    by_rate = "search_promote" in runs and bool((pd.to_numeric(runs["search_promote"], errors="coerce") > 1).any())
    for init in sorted(runs["init"].dropna().unique()):
        mine = [expr.Metric("Group") == group, expr.Config(config_key(INIT)) == init]
        if first_new_seed is not None:  # search=two_stage: the verdict's runs, the new seeds of stage 2
            mine.append(expr.Config(config_key(SEED)) >= first_new_seed)
        runset = wr.Runset(
            entity=entity,
            project=project,
            name=f"{group}: {init}"
            + (" (stage 2)" if first_new_seed is not None else "")
            + (", by promoted rate: the tables name the chosen one" if by_rate else ""),
            filters=expr.And(*mine),
            groupby=[f"config.{RANK}"] + ([f"config.{LEARNING_RATE}"] if by_rate else []),
        )
        blocks += [
            wr.H2(f"Initialization: {init}"),
            wr.PanelGrid(runsets=[runset], panels=panels(logged, metrics, True, len(runs))),
        ]
        if first_new_seed is not None:
            blocks += landscape_blocks(entity, project, group, init, first_new_seed, logged, len(runs))
    blocks += [wr.H2("Tables"), *(wr.MarkdownBlock(table.markdown()) for table in tables)]
    return wr.Report(
        entity=entity,
        project=project,
        title=title or f"{group}: LoRA rank x init",
        description=f"Runs of the W&B group {group}, by initialization and LoRA rank (python -m analysis --report).",
        blocks=blocks,
        width="fluid",
    )


def build_workspace(views: Views) -> ws.Workspace:
    """The sweep's workspace view (no network): the group's runs grouped by init then rank, each rank
    in one color, the report's panels and the tables."""
    runs, tables, logged, group, title = views.runs, views.tables, views.logged, views.group, views.title
    entity, project = views.target.split("/")
    benchmarks = views.benchmarks
    metrics = pass_metrics(logged, benchmarks)
    made = panels(logged, metrics, False, len(runs))
    check_keys(made, logged)
    curves = [p for p in made if isinstance(p, wr.LinePlot)]
    ranks = [rank for rank in rank_order(runs["rank"].unique()) if rank != "full"]
    colors = {
        ws.GroupPath(str(init), str(rank)): COLORS[ranks.index(rank) % len(COLORS)]
        for init in sorted(runs["init"].dropna().unique())
        for rank in ranks
    }
    sections = [ws.Section(name="Training curves", panels=curves, is_open=True)]
    sections += [
        ws.Section(name=f"{bench}: Pass@k", panels=[p for p in made if p.title.startswith(f"{bench} ")], is_open=True)
        for bench in dict(metrics)
    ]
    notes = [header(runs, group, logged, metrics), *(table.markdown() for table in tables)]
    sections.append(ws.Section(name="Tables", panels=[wr.MarkdownPanel(markdown=text) for text in notes]))
    return ws.Workspace(
        entity=entity,
        project=project,
        name=title or f"{group}: LoRA rank x init",
        sections=sections,
        settings=ws.WorkspaceSettings(x_axis=STEP, max_runs=max(10, len(runs))),
        runset_settings=ws.RunsetSettings(
            filters=expr.And(expr.Metric("Group") == group),
            groupby=[expr.Config(INIT), expr.Config(RANK)],
            group_colors=colors,
        ),
    )


def to_json(value):
    """A report or workspace as plain JSON: each object with its class under "type", its public fields."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name[0] != "_"}
        return {"type": type(value).__name__, **fields}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {repr(k) if isinstance(k, ws.GroupPath) else str(k): to_json(v) for k, v in value.items()}
    return value


VIEW_QUERY = """query View($entityName: String, $name: String, $viewType: String, $viewName: String) {
  project(name: $name, entityName: $entityName) {
    allViews(viewType: $viewType, viewName: $viewName) { edges { node { id displayName } } }
  }
}"""


def adopt_existing(view, api) -> None:
    """Point `view` at the saved report of the same title, or the saved view of the same name, so that
    saving updates it."""
    from wandb_workspaces._graphql import execute_graphql

    if isinstance(view, wr.Report):
        for saved in api.reports(f"{view.entity}/{view.project}"):
            if saved.display_name == view.title:
                view.id = saved.id
                return
        return
    digest = hashlib.sha1(f"{view.entity}/{view.project}/{view.name}".encode()).hexdigest()[:11]
    view._internal_name = f"nw-{digest}-v"  # the same name always: the same view
    variables = {"entityName": view.entity, "name": view.project, "viewType": "project-view"}
    found = execute_graphql(api, VIEW_QUERY, {**variables, "viewName": view._internal_name})
    edges = ((found.get("project") or {}).get("allViews") or {}).get("edges") or []
    if edges:
        view._internal_id = edges[0]["node"]["id"]


def save(view, out: Path, api=None) -> str:
    """Create or update the report or workspace on the W&B server; its URL. W&B unreachable (or no
    credentials): one UserError line naming the offline alternatives."""
    kind, flag = ("report", "--report-json") if isinstance(view, wr.Report) else ("workspace", "--workspace-json")
    try:
        adopt_existing(view, api if api is not None else public_api())
        view.save()  # the one call that writes to the W&B server: no test runs it (the tests have no server)
        return view.url
    except Exception as err:  # noqa: BLE001 - wandb raises CommError, UsageError, HTTP errors...
        raise UserError(
            f"Could not save the {kind} to W&B ({type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}). "
            f"Check WANDB_API_KEY and the network; offline, write it with {flag} FILE, and the tables and plots "
            f"are in {out}/."
        ) from err


def connect():
    """wandb.Api() for reading the runs; W&B unreachable (or no credentials): one UserError line."""
    try:
        return public_api()
    except Exception as err:  # noqa: BLE001 - wandb raises UsageError without credentials
        raise UserError(
            f"Could not reach W&B ({type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}). "
            "Check WANDB_API_KEY and the network."
        ) from err


def local_group(runs: pd.DataFrame) -> str:
    """The W&B group of local run folders: their sweep's name (config `name`, which tracking uses as group)."""
    import yaml

    names = {
        (yaml.safe_load((Path(path) / "config.yaml").read_text()) or {}).get("name")
        for path in (runs["path"].dropna() if "path" in runs else [])
        if (Path(path) / "config.yaml").exists()
    }
    if len(names) != 1 or None in names:
        raise UserError(f"Name the runs' W&B group with --group (the run folders' sweeps: {sorted(map(str, names))}).")
    return str(names.pop())
