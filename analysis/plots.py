"""Figures of a sweep (PNG): training curves per init and rank, Pass@1 against rank, accuracy against cost,
and Pass@1 by rank and learning rate when the sweep varies the learning rate."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .budget_axis import LEVEL, varies_budget  # noqa: E402
from .comparisons import all_comparisons, column_label, rank_order, setting_label  # noqa: E402
from .rank_lr import lr_labels, rank_lr_grid, rank_lr_groups, varies_learning_rate  # noqa: E402
from .render import GAP  # noqa: E402
from .two_stage import is_two_stage, promoted_rates, stage1_rows  # noqa: E402


def _rank_label(rank) -> str:
    return "full fine-tuning" if rank == "full" else f"LoRA r={rank}"


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _label_single_panel(ax, xlabel: str, ylabel: str, title: str, legend_size: int) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size)


def training_curves(curves: pd.DataFrame, column: str, ylabel: str, title: str, path: Path) -> Path | None:
    """One panel per init; per rank a thin line for every run (seed) and a thick one for their mean over the
    steps every run reached (beyond, a mean of the few runs that got further would jump)."""
    data = curves.dropna(subset=[column]) if len(curves) else curves
    if not len(data):
        return None
    inits = sorted(data["init"].unique())
    fig, axes = plt.subplots(1, len(inits), figsize=(5 * len(inits), 3.8), squeeze=False, sharey=True)
    for ax, init in zip(axes[0], inits):
        panel = data[data["init"] == init]
        for rank in rank_order(panel["rank"].unique()):
            arm = panel[panel["rank"] == rank]
            reached = arm.groupby("run")["step"].max().min()
            line = arm[arm["step"] <= reached].groupby("step")[column].mean()
            drawn = ax.plot(line.index, line.values, marker="o", markersize=3, linewidth=2, label=_rank_label(rank))
            for _, run in arm.groupby("run"):
                ax.plot(run["step"], run[column], color=drawn[0].get_color(), linewidth=0.7, alpha=0.3)
        ax.set_title(f"init: {init}")
        ax.set_xlabel("training step (optimizer updates)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel(ylabel)
    fig.suptitle(title)
    return _save(fig, path)


def pass_vs_rank(runs: pd.DataFrame, benchmark: str, metric: str, path: Path) -> Path | None:
    key, base_key = f"eval/{benchmark}/{metric}", f"baseline/{benchmark}/{metric}"
    ok = runs[(runs["status"] == "completed")].dropna(subset=[key]) if key in runs else runs.iloc[0:0]
    if not len(ok):
        return None
    ranks = rank_order(ok["rank"].unique())
    positions = {rank: i for i, rank in enumerate(ranks)}
    fig, ax = plt.subplots(figsize=(6, 4))
    inits = sorted(ok["init"].unique())
    for number, (init, group) in enumerate(ok.groupby("init", sort=True)):
        means = group.groupby("rank")[key].mean()
        xs = [positions[r] for r in ranks if r in means.index]
        line = ax.plot(
            xs,
            [means[r] * 100 for r in ranks if r in means.index],
            marker="o",
            label=f"{init} (trained, mean of runs)",
        )
        # every run as a dot beside its mean: the seeds' spread is what a comparison rests on
        offset = 0.08 * (number - (len(inits) - 1) / 2)
        ax.scatter(
            [positions[r] + offset for r in group["rank"]],
            group[key] * 100,
            s=14,
            alpha=0.5,
            color=line[0].get_color(),
        )
        if base_key in group and group[base_key].notna().any():
            ax.axhline(
                group[base_key].mean() * 100,
                linestyle="--",
                color=line[0].get_color(),
                alpha=0.7,
                label=f"{init} (untrained baseline)",
            )
    ax.set_xticks(range(len(ranks)), [_rank_label(r) for r in ranks], rotation=15)
    _label_single_panel(
        ax, "adapter", f"{metric} on {benchmark} (%)", f"{metric} on {benchmark} after training, by LoRA rank", 8
    )
    return _save(fig, path)


def accuracy_vs_cost(runs: pd.DataFrame, benchmark: str, metric: str, path: Path) -> Path | None:
    key = f"eval/{benchmark}/{metric}"
    ok = runs[(runs["status"] == "completed")].dropna(subset=[key, "cost_usd"]) if key in runs else runs.iloc[0:0]
    if not len(ok):
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    markers = dict(zip(rank_order(ok["rank"].unique()), "osD^vP*X"))
    for init, group in ok.groupby("init", sort=True):
        color = None
        for rank, cell in group.groupby("rank"):
            points = ax.scatter(
                cell["cost_usd"],
                cell[key] * 100,
                marker=markers[rank],
                color=color,
                label=f"{init}, {_rank_label(rank)}",
            )
            color = points.get_facecolor()[0]
    _label_single_panel(
        ax,
        "compute cost of the run (USD, at the budget's price per device-hour)",
        f"{metric} on {benchmark} (%)",
        f"Accuracy against cost ({benchmark})",
        7,
    )
    return _save(fig, path)


def rank_lr_heatmap(runs: pd.DataFrame, benchmark: str, path: Path) -> Path | None:
    """The rank x learning-rate tables as heatmaps, in one figure: a row of two panels per init (and per
    adapter variant / budget when they vary), y = LoRA rank, x = learning rate (categorical, ascending).
    Left: final Pass@1 (%, mean over seeds); right: its change against the untrained baseline (points,
    diverging colours centred on 0, with the tables' marks: * seed-level, ° one run beyond its evaluation
    noise). Each rank's best learning rate (the table's ▲) is outlined; a gap is a blank cell marked —."""
    compared = all_comparisons(runs, benchmark)
    grids = [
        (setting_label(setting), init, rank_lr_grid(group, benchmark, setting, compared))
        for setting, init, group in rank_lr_groups(runs)
    ]
    grids = [(setting, init, grid) for setting, init, grid in grids if any(grid.finals.values())]
    if not grids:
        return None
    columns = max(len(grid.lrs) for _, _, grid in grids)
    rows = max(len(grid.ranks) for _, _, grid in grids)
    fig, axes = plt.subplots(
        len(grids), 2, figsize=(2 * (2.5 + 1.1 * columns), len(grids) * (1.6 + 0.5 * rows)), squeeze=False
    )
    for (setting, init, grid), panels in zip(grids, axes):
        means = np.array([[grid.mean(rank, lr) * 100 for lr in grid.lrs] for rank in grid.ranks])
        deltas = np.array([[grid.delta(rank, lr) * 100 for lr in grid.lrs] for rank in grid.ranks])
        limit = float(np.nanmax(np.abs(deltas))) if np.isfinite(deltas).any() else 0.0
        for ax, data, signed in ((panels[0], means, False), (panels[1], deltas, True)):
            scale = dict(cmap="RdBu", vmin=-(limit or 1), vmax=limit or 1) if signed else dict(cmap="viridis")
            image = ax.imshow(np.ma.masked_invalid(data), origin="lower", aspect="auto", **scale)
            fig.colorbar(image, ax=ax)
            for i, rank in enumerate(grid.ranks):
                for j, lr in enumerate(grid.lrs):
                    mark = grid.mark(rank, lr) if signed else ""
                    text = GAP if np.isnan(data[i, j]) else f"{data[i, j]:{'+' if signed else ''}.1f}{mark}"
                    box = dict(boxstyle="round,pad=0.15", facecolor="white", alpha=0.7, linewidth=0)
                    ax.text(j, i, text, ha="center", va="center", fontsize=8, bbox=box)
                if rank in grid.best:
                    corner = (grid.lrs.index(grid.best[rank]) - 0.5, i - 0.5)
                    for color, width in (("white", 4), ("black", 2)):  # visible on dark and light cells
                        ax.add_patch(Rectangle(corner, 1, 1, fill=False, ec=color, lw=width, clip_on=False))
            labels = lr_labels(grid.lrs)
            ax.set_xticks(range(len(grid.lrs)), [labels[lr].removeprefix("lr=") for lr in grid.lrs], rotation=30)
            ax.set_yticks(range(len(grid.ranks)), [column_label(rank) for rank in grid.ranks])
            ax.set_xlabel("learning rate")
            ax.set_ylabel("LoRA rank")
            what = "change against the untrained baseline (points)" if signed else "final Pass@1 (%)"
            ax.set_title(f"{init}{', ' + setting if setting else ''}: {what}", fontsize=9)
    fig.suptitle(f"Pass@1 on {benchmark} by LoRA rank and learning rate (outlined: each rank's best)")
    return _save(fig, path)


def pass_vs_training_hours(levels: pd.DataFrame, benchmark: str, path: Path) -> Path | None:
    """Pass@1 against the training hours spent, at each budget level the runs reached (analysis.budget_axis): one
    panel per init, per rank a thin line for every run (its milestones and its end) and a thick one through the mean
    over runs at each level; the untrained baseline dashed. None unless the runs reach several levels."""
    key, base_key = f"eval/{benchmark}/pass@1", f"baseline/{benchmark}/pass@1"
    if not varies_budget(levels) or key not in levels:
        return None
    ok = levels[levels["status"] == "completed"].dropna(subset=[key, "training_hours"])
    if not len(ok) or ok[LEVEL].nunique() < 2:
        return None
    minutes = ok["training_hours"].max() < 2  # CPU-sized budgets read better in minutes
    scale, unit = (60, "minutes") if minutes else (1, "hours")
    inits = sorted(ok["init"].unique())
    fig, axes = plt.subplots(1, len(inits), figsize=(5.5 * len(inits), 4.2), squeeze=False, sharey=True)
    for ax, init in zip(axes[0], inits):
        panel = ok[ok["init"] == init]
        base = panel[base_key].mean() * 100 if base_key in panel and panel[base_key].notna().any() else None
        start = [0.0] if base is not None else []  # every run starts from the untrained model
        for rank in rank_order(panel["rank"].unique()):
            arm = panel[panel["rank"] == rank]
            means = arm.groupby(LEVEL)[["training_hours", key]].mean().sort_values("training_hours")
            drawn = ax.plot(
                start + list(means["training_hours"] * scale),
                ([base] if start else []) + list(means[key] * 100),
                marker="o",
                linewidth=2.5,
                label=_rank_label(rank),
            )
            for _, run in arm.groupby("run"):
                run = run.sort_values("training_hours")
                ax.plot(
                    start + list(run["training_hours"] * scale),
                    ([base] if start else []) + list(run[key] * 100),
                    color=drawn[0].get_color(),
                    linewidth=0.7,
                    alpha=0.35,
                )
        if base is not None:
            ax.axhline(base, linestyle="--", color="grey", label="untrained baseline")
        ax.set_title(f"init: {init}")
        ax.set_xlabel(f"training {unit} (measured, at each budget level)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel(f"Pass@1 on {benchmark} (%)")
    fig.suptitle(f"Pass@1 on {benchmark} against training time\n(thin: each run; thick: the mean over runs)")
    return _save(fig, path)


def two_stage_landscape(levels: pd.DataFrame, path: Path) -> Path | None:
    """search=two_stage's stage 1 as a heatmap per init: y = LoRA rank, x = learning rate, the selection score at
    the milestone (%, mean over the stage-1 seeds); the rate promoted for each rank (the landscape table's ▲) is
    outlined, an arm without a score is a blank cell marked —."""
    stage1 = stage1_rows(levels[levels["milestone"].isna()] if "milestone" in levels else levels)
    if stage1.empty or stage1["milestone_selection"].dropna().empty:
        return None
    inits = sorted(stage1["init"].dropna().unique())
    fig, axes = plt.subplots(1, len(inits), figsize=(5.5 * len(inits), 3.4), squeeze=False)
    for ax, init in zip(axes[0], inits):
        mine = stage1[stage1["init"] == init]
        ranks, lrs = rank_order(mine["rank"].unique()), sorted(float(lr) for lr in mine["learning_rate"].unique())
        chosen = promoted_rates(mine)
        scores = mine.astype({"milestone_selection": float}).groupby(["rank", "learning_rate"])["milestone_selection"]
        means = scores.mean()
        data = np.array([[means.get((rank, lr), np.nan) * 100 for lr in lrs] for rank in ranks])
        image = ax.imshow(np.ma.masked_invalid(data), origin="lower", aspect="auto", cmap="viridis")
        fig.colorbar(image, ax=ax)
        for i, rank in enumerate(ranks):
            for j, lr in enumerate(lrs):
                text = GAP if np.isnan(data[i, j]) else f"{data[i, j]:.1f}"
                box = dict(boxstyle="round,pad=0.15", facecolor="white", alpha=0.7, linewidth=0)
                ax.text(j, i, text, ha="center", va="center", fontsize=8, bbox=box)
            if rank in chosen:
                for color, width in (("white", 4), ("black", 2)):
                    corner = (lrs.index(chosen[rank]) - 0.5, i - 0.5)
                    ax.add_patch(Rectangle(corner, 1, 1, fill=False, ec=color, lw=width, clip_on=False))
        labels = lr_labels(lrs)
        ax.set_xticks(range(len(lrs)), [labels[lr].removeprefix("lr=") for lr in lrs], rotation=30)
        ax.set_yticks(range(len(ranks)), [column_label(rank) for rank in ranks])
        ax.set_xlabel("learning rate")
        ax.set_ylabel("LoRA rank")
        ax.set_title(f"{init}: selection Pass@1 at the milestone (%)", fontsize=9)
    fig.suptitle("Two-stage search, stage 1 (outlined: the rate promoted)", fontsize=10)
    return _save(fig, path)


def all_plots(
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    benchmarks: list[tuple[str, str]],
    out: Path,
    levels: pd.DataFrame | None = None,
) -> list[Path]:
    """Every figure; `runs` are the runs at their own budgets, `levels` every run at each budget level it reached
    (analysis.budget_axis: the Pass@1-against-training-hours figure)."""
    made = [
        training_curves(
            curves,
            "reward",
            "mean reward of a step's completions",
            "Reward during training",
            out / "reward_curves.png",
        ),
        training_curves(
            curves,
            "completion_length",
            "mean completion length (tokens)",
            "Completion length during training",
            out / "completion_length_curves.png",
        ),
    ]
    for benchmark, metric in benchmarks:
        if metric == "pass@1":
            made.append(pass_vs_rank(runs, benchmark, metric, out / f"{benchmark}_pass1_vs_rank.png"))
            made.append(accuracy_vs_cost(runs, benchmark, metric, out / f"{benchmark}_pass1_vs_cost.png"))
            if varies_learning_rate(runs):
                made.append(rank_lr_heatmap(runs, benchmark, out / f"rank_x_lr_{benchmark}.png"))
            if levels is not None:
                made.append(
                    pass_vs_training_hours(levels, benchmark, out / f"{benchmark}_pass1_vs_training_hours.png")
                )
    if levels is not None and is_two_stage(levels):
        made.append(two_stage_landscape(levels, out / "two_stage_landscape.png"))
    return [p for p in made if p is not None]
