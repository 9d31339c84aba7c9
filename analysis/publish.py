"""--log-to-wandb: the tables (wandb.Table) and plots (wandb.Image) in one W&B run of job type
"analysis", in the sweep's project and group, next to the runs it compares."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd


def publish(
    tables, runs: pd.DataFrame, plots: list[Path], *, project: str, entity: str | None, group: str | None, out: Path
) -> str:
    import wandb

    mode = os.environ.get("WANDB_MODE", "online")
    run = wandb.init(
        project=project,
        entity=entity,
        group=group,
        job_type="analysis",
        name=f"analysis-{group or 'sweep'}",
        config={"kind": "analysis"},
        dir=str(out),
        mode=mode,
        settings=wandb.Settings(silent=True),
    )
    for table in tables:
        frame = table.frame.reset_index(names=table.index_label)
        frame.columns = [str(c) for c in frame.columns]
        run.log({f"tables/{table.name}": wandb.Table(dataframe=frame.astype(str))})
    run.log({"tables/runs": wandb.Table(dataframe=runs.astype(str))})
    for plot in plots:
        run.log({f"plots/{plot.stem}": wandb.Image(str(plot))})
    where = run.url or run.dir
    run.finish()
    return str(where)
