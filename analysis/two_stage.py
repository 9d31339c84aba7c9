"""A two-stage search (search=two_stage) read back: the verdict on the runs that did not choose, the landscape that
chose.

Every run of a two-stage sweep knows its stage from its own config (analysis.sources: `search_stage`, from its seed
and search.stage1_seeds). The comparisons (tables, significance.csv, Holm) use only the stage-2 runs, each rank at
the learning rate its stage-1 runs chose: the learning rate is then a property of the arm, not a setting
(`verdict_rows`). The stage-1 runs are reported beside them and never tested: those that won promotion were picked
for being good on the selection benchmark, and counting them would favour the winners.

Per init, `two_stage_tables` gives:
- the search table: rank | chosen learning rate | stage-2 Pass@1 with its change against the baseline (the marks of
  the stage-2 Pass@1 table) | each other rank's difference (Welch, Holm: significance.csv's rows) | the stage-1
  winners' own final Pass@1, labelled;
- the landscape: the stage-1 selection score at the milestone by rank and learning rate, ▲ on each rank's choice,
  and with two or more stage-1 seeds, how often one seed alone would have promoted another rate.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .comparisons import Comparison, column_label, rank_order
from .rank_lr import BEST, lr_labels
from .render import GAP, Table, cell

CHOSEN = "chosen_learning_rate"
ENDED = ("completed", "failed", "damaged")  # a trained-on stage-1 run that will not change any more


def is_two_stage(runs: pd.DataFrame) -> bool:
    return "search_stage" in runs and runs["search_stage"].notna().any()


def verdict_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs the comparisons use. Outside a two-stage search, all of them; in one, its stage-2 runs (and any
    run of the folder that is not part of the search), each at its rank's chosen learning rate (`final_choices`):
    `learning_rate` cleared (not a setting, so the ranks are compared with each other), kept as
    `chosen_learning_rate`. The stage-2 runs of a promoted rate that was not chosen are left out."""
    if not is_two_stage(runs):
        return runs
    choices = final_choices(runs)
    stage2 = runs[runs["search_stage"] == 2]
    kept = [
        choices.get((init, rank)) == lr
        for init, rank, lr in zip(stage2["init"], stage2["rank"], stage2["learning_rate"])
    ]
    stage2 = stage2.loc[pd.Series(kept, index=stage2.index, dtype=bool)].assign(
        **{CHOSEN: lambda r: r["learning_rate"], "learning_rate": np.nan}
    )
    return pd.concat([runs[runs["search_stage"].isna()], stage2], ignore_index=True)


def final_choices(runs: pd.DataFrame) -> dict[tuple, float]:
    """(init, rank) -> the learning rate its verdict uses. With one promoted rate (search.promote=1), that rate.
    With several, the one whose stage-1 runs, trained on to the full budget, score best on the selection benchmark
    there (their selected checkpoint; the lower rate on ties): the choice at the full budget, still made by runs the
    verdict does not use. Until every promoted rate's trained-on runs have ended, and each rate has a score, the rank
    has no choice yet."""
    from rlvr_sweeps.planning.search import promote

    chosen = {}
    for (init, rank), (rates, scores, ended) in _promoted(runs).items():
        if len(rates) == 1:
            chosen[(init, rank)] = rates[0]
        elif ended and all(scores.values()):
            chosen[(init, rank)] = promote({(rank, lr): values for lr, values in scores.items()}, 1)[rank][0]
    return chosen


def _promoted(runs: pd.DataFrame) -> dict[tuple, tuple[list[float], dict[float, list[float]], bool]]:
    """(init, rank) -> its stage-2 learning rates (the promoted ones), the full-budget selection scores of their
    trained-on stage-1 runs by rate, and whether those runs have all ended."""
    stage1, stage2 = stage1_rows(runs), runs[runs["search_stage"] == 2]
    found = {}
    for (init, rank), group in stage2.groupby(["init", "rank"], sort=False):
        rates = sorted({float(lr) for lr in group["learning_rate"].dropna()})
        mine = stage1[(stage1["init"] == init) & (stage1["rank"] == rank) & stage1["learning_rate"].isin(rates)]
        done = mine[mine["status"] == "completed"]
        scores = {
            lr: list(done.loc[done["learning_rate"] == lr, "final_selection"].dropna().astype(float)) for lr in rates
        }
        found[(init, rank)] = (rates, scores, bool(mine["status"].isin(ENDED).all()))
    return found


def choice_notes(runs: pd.DataFrame, init) -> list[str]:
    """Per rank of `init` with several promoted rates: which one the trained-on stage-1 runs chose at the full
    budget, and the stage-2 runs left out of the verdict (or that the choice waits for those runs)."""
    stage2 = runs[(runs["search_stage"] == 2) & (runs["init"] == init)]
    choices, notes = final_choices(runs), []
    for (of, rank), (rates, scores, _) in _promoted(runs).items():
        if of != init or len(rates) < 2:
            continue
        listed = ", ".join(f"{lr:g}" for lr in rates)
        choice = choices.get((init, rank))
        if choice is None:
            notes.append(
                f"{column_label(rank)}: promoted {listed}; the choice between them waits for their stage-1 runs to "
                "finish the full budget, and its stage-2 runs are not in the verdict yet."
            )
            continue
        scored = "; ".join(f"{lr:g}: {100 * np.mean(scores[lr]):.1f}" for lr in rates)
        others = stage2[(stage2["rank"] == rank) & (stage2["learning_rate"] != choice)]
        notes.append(
            f"{column_label(rank)}: promoted {listed}; their stage-1 runs, trained on to the full budget, chose "
            f"{choice:g} on the selection benchmark ({scored}); the {len(others)} stage-2 run(s) of the other rate(s) "
            "are not tested."
        )
    return notes


def stage1_rows(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["search_stage"] == 1] if is_two_stage(runs) else runs.iloc[0:0]


def two_stage_tables(
    runs: pd.DataFrame, stage2: pd.DataFrame, benchmark: str, comparisons: dict[tuple, Comparison]
) -> list[Table]:
    """The search table and the landscape of each init (`runs`: every row, `stage2`: verdict_rows; `comparisons`:
    all_comparisons of `stage2`)."""
    stage1 = stage1_rows(runs)
    tables = []
    for init, chose in stage1.groupby("init", sort=True):
        verdict = stage2[(stage2["init"] == init) & stage2["search_stage"].eq(2)] if len(stage2) else stage2
        tables.append(search_table(init, chose, verdict, benchmark, comparisons, choice_notes(runs, init)))
        tables.append(landscape_table(init, chose))
    return tables


def _own(comparisons: dict[tuple, Comparison], init) -> dict[tuple, Comparison]:
    """This init's comparisons of the stage-2 runs ((high, low) -> comparison), whatever their setting key."""
    return {(key[2], key[3]): c for key, c in comparisons.items() if key[1] == init}


def search_table(
    init, stage1: pd.DataFrame, stage2: pd.DataFrame, benchmark: str, comparisons, choices: list[str] = ()
) -> Table:
    final_key, base_key = f"eval/{benchmark}/pass@1", f"baseline/{benchmark}/pass@1"
    found = _own(comparisons, init)
    ranks = rank_order(pd.concat([stage1["rank"], stage2["rank"]]).unique())
    frame, values, numbers = {}, {}, {}
    for rank in ranks:
        row = column_label(rank)
        mine = stage2[(stage2["rank"] == rank) & (stage2["status"] == "completed")]
        finals = [float(v) for v in mine[final_key].dropna()] if final_key in mine else []
        base = mine[base_key].dropna() if base_key in mine else pd.Series(dtype=float)
        chosen = stage2.loc[stage2["rank"] == rank, CHOSEN].dropna().unique() if CHOSEN in stage2 else []
        against = found.get((rank, "baseline"))
        text = (
            cell(finals, baseline=float(base.mean()) if len(base) else None, mark=against.symbol if against else "")
            if finals
            else f"{GAP} (no completed stage-2 run)"
        )
        winners = stage1[(stage1["rank"] == rank) & (stage1["status"] == "completed")]
        won = [float(v) for v in winners[final_key].dropna()] if final_key in winners else []
        frame[row] = {
            "chosen learning rate": ", ".join(f"{lr:g}" for lr in sorted(chosen)) or GAP,
            "stage-2 runs": len(finals),
            "stage-2 Pass@1": text,
        }
        numbers[row] = {
            "chosen_learning_rate": chosen[0] if len(chosen) == 1 else math.nan,
            "stage2_pass1": float(np.mean(finals)) * 100 if finals else math.nan,
            "stage2_runs": len(finals),
            "delta": against.seeds.delta * 100 if against else math.nan,
            "delta_ci_low": against.seeds.low * 100 if against else math.nan,
            "delta_ci_high": against.seeds.high * 100 if against else math.nan,
            "marked": bool(against and against.marked),
        }
        for other in ranks:
            pair, sign = found.get((rank, other)), 1
            if pair is None:
                pair, sign = found.get((other, rank)), -1  # kept as higher rank minus lower: this row's side
            if other == rank or pair is None:
                continue
            frame[row][f"vs {column_label(other)}"] = f"{sign * pair.seeds.delta * 100:+.1f}{pair.symbol}"
            numbers[row][f"vs_{column_label(other)}"] = sign * pair.seeds.delta * 100
            numbers[row][f"vs_{column_label(other)}_p_holm"] = pair.p_holm
            numbers[row][f"vs_{column_label(other)}_marked"] = bool(pair.marked)
        frame[row]["stage-1 winner (not tested)"] = (
            ", ".join(f"{v * 100:.1f}" for v in won) if won else "not trained on yet"
        )
        numbers[row]["stage1_winner_pass1"] = float(np.mean(won)) * 100 if won else math.nan
        values[rank] = {"pass1": float(np.mean(finals)) if finals else math.nan}
    notes = [
        f"Values in %: final Pass@1 on {benchmark}. Each rank at the learning rate its stage-1 runs chose on the "
        "selection benchmark at the milestone (the landscape below). The stage-2 runs are new seeds that took no part "
        "in choosing: the change against the untrained baseline and 'vs r=...' (this rank minus the other, in points) "
        "are their seed-level comparisons (Welch; * after Holm's correction over the table's comparisons, as in "
        "significance.csv). The stage-1 winners trained on to the full budget are shown for reference and are never "
        "tested: they were picked for being good."
    ] + list(choices)
    shown = pd.DataFrame.from_dict(frame, orient="index").fillna("")  # a rank against itself: blank
    winner = [c for c in shown if c.startswith("stage-1 winner")]
    shown = shown[[c for c in shown if c not in winner] + winner]
    return Table(
        f"{benchmark}/pass@1_two_stage/{init}",
        f"{benchmark} Pass@1, each LoRA rank at its chosen learning rate ({init}, search=two_stage)",
        shown,
        pd.DataFrame.from_dict(values, orient="index"),
        notes,
        pd.DataFrame.from_dict(numbers, orient="index"),
        index_label="rank",
    )


def promoted_rates(stage1: pd.DataFrame) -> dict:
    """rank -> the learning rate promoted, as the promotion rule has it (planning.search.promote: highest mean
    selection score, the lower rate on ties, an arm without a score never)."""
    from rlvr_sweeps.planning.search import promote

    return {rank: lrs[0] for rank, lrs in promote(stage1_scores(stage1), 1).items()}


def stage1_scores(stage1: pd.DataFrame) -> dict[tuple, list[float]]:
    """(rank, learning rate) -> the stage-1 runs' selection scores at the milestone."""
    return {
        (rank, float(lr)): list(group["milestone_selection"].astype(float))
        for (rank, lr), group in stage1.groupby(["rank", "learning_rate"])
    }


def tie_notes(stage1: pd.DataFrame, labels: dict) -> list[str]:
    """A line per rank whose rate the tie rule chose: its scores did not tell the tied rates apart."""
    from rlvr_sweeps.planning.search import ties

    return [
        f"{column_label(rank)}: {', '.join(labels[lr].removeprefix('lr=') for lr in rates)} scored the same; the "
        "tie rule, not the scores, chose the lowest (a later milestone or more selection problems would decide)."
        for rank, rates in ties(stage1_scores(stage1), 1).items()
    ]


def landscape_table(init, stage1: pd.DataFrame) -> Table:
    """The stage-1 selection scores at the milestone by rank and learning rate, ▲ on each rank's choice; with two
    or more stage-1 seeds, how often one seed alone would have chosen otherwise."""
    ranks = rank_order(stage1["rank"].unique())
    lrs = sorted(float(lr) for lr in stage1["learning_rate"].dropna().unique())
    labels = lr_labels(lrs)
    chosen = promoted_rates(stage1)
    frame, values = {}, {}
    for rank in ranks:
        row = column_label(rank)
        frame[row], values[rank] = {}, {}
        for lr in lrs:
            arm = stage1[(stage1["rank"] == rank) & (stage1["learning_rate"] == lr)]
            scores = [float(v) for v in arm["milestone_selection"].dropna()]
            if scores:
                text = cell(scores) + (BEST if chosen.get(rank) == lr else "")
            else:
                statuses = ", ".join(sorted(set(arm["status"].astype(str)))) or "no runs"
                text = f"{GAP} ({statuses})"
            frame[row][labels[lr]] = text
            values[rank][lr] = float(np.mean(scores)) if scores else math.nan
    milestone = stage1["search_milestone"].dropna().iloc[0] if "search_milestone" in stage1 else None
    selection = stage1["selection_benchmark"].dropna().iloc[0] if "selection_benchmark" in stage1 else "selection"
    notes = [
        f"Values in %: the stage-1 runs' best {selection} Pass@1 (the selection benchmark's subset) up to "
        + (f"{milestone:g} of the budget" if milestone else "the milestone")
        + f", the mean over their seeds.{BEST} marks the learning rate promoted for each rank (highest mean; the "
        "lower rate on ties)."
    ]
    notes += tie_notes(stage1, labels) + stability_notes(stage1, chosen)
    return Table(
        f"two_stage_landscape/{init}",
        f"Stage 1: selection score at the milestone by LoRA rank and learning rate ({init})",
        pd.DataFrame.from_dict(frame, orient="index"),
        pd.DataFrame.from_dict(values, orient="index"),
        notes,
        index_label="rank",
    )


def stability_notes(stage1: pd.DataFrame, chosen: dict) -> list[str]:
    """With two or more stage-1 seeds: per rank, how many of its seeds alone would have promoted the same rate."""
    seeds = sorted(stage1["seed"].dropna().unique())
    if len(seeds) < 2:
        return ["One stage-1 seed per arm: how often another seed would have chosen otherwise is not measured."]
    parts = []
    for rank, rate in chosen.items():
        agree = sum(promoted_rates(stage1[stage1["seed"] == seed]).get(rank) == rate for seed in seeds)
        parts.append(f"{column_label(rank)} {agree} of {len(seeds)}")
    return [
        "Seeds that alone would have promoted the same learning rate: "
        + "; ".join(parts)
        + " (fewer than all: the choice rests on the seeds' luck as much as on the rates)."
    ]
