"""The end of a run in one line and one picture: did it learn?

The verdict compares the mean training reward over the first and the last third of the logged
steps, and each benchmark's Pass@1 before and after training with a paired bootstrap 95% interval
over its problems (rlvr_sweeps.evaluation.significance), so that a newcomer sees at once whether the change is
larger than the noise of evaluating this run. It says nothing about another training seed: whether an
arm beats another is the sweep analysis' question (python -m analysis, runs as the unit).
`reward.png` plots the reward per step with a rolling mean.
"""

from __future__ import annotations

import logging

from ..run.record import RunRecord
from .significance import run_delta

log = logging.getLogger(__name__)


def reward_thirds(steps: list[dict], key: str = "reward") -> tuple[float, float] | None:
    """Mean `key` over the first and the last third of the logged steps (None below 3 steps)."""
    values = [float(s[key]) for s in steps if isinstance(s.get(key), (int, float))]
    if len(values) < 3:
        return None
    third = len(values) // 3
    return sum(values[:third]) / third, sum(values[-third:]) / third


def write_verdict(record: RunRecord, summary: dict) -> dict:
    """Log the verdict line, add it to summary.json (`verdict`), and write reward.png."""
    steps = record.read_metrics()
    parts, verdict = [], {}
    thirds = reward_thirds(steps)
    if thirds:
        verdict["reward_first_third"], verdict["reward_last_third"] = round(thirds[0], 4), round(thirds[1], 4)
        parts.append(f"reward {thirds[0]:.3f} -> {thirds[1]:.3f} (first -> last third of {len(steps)} steps)")
    for benchmark in (summary.get("eval") or {}).get("final") or {}:
        interval = run_delta(record.dir, benchmark)
        if interval is None:
            continue
        baseline = summary["metrics"].get(f"baseline/{benchmark}/pass@1")
        final = summary["metrics"].get(f"eval/{benchmark}/pass@1")
        verdict[benchmark] = {
            "delta": interval.delta,
            "ci_low": interval.low,
            "ci_high": interval.high,
            "problems": interval.problems,
            "excludes_zero": interval.excludes_zero,
            "covers": "evaluation noise of this run, not another training seed",
        }
        parts.append(f"{benchmark} Pass@1 {baseline:.3f} -> {final:.3f}: {interval.describe()}")
    if plot_reward(steps, record.dir / "reward.png"):
        verdict["plot"] = "reward.png"
    line = "; ".join(parts) or "no reward logged and nothing evaluated"
    log.info("Verdict after %s steps (%s): %s", summary.get("global_step"), summary.get("stop_reason"), line)
    budget = summary.get("budget") or {}
    log.info(
        "Budget %s: %.0f of %.0f s of training, %.0f s of evaluation; %.4f %s-hours, $%.4f.",
        budget.get("name"),
        budget.get("training_s", 0),
        budget.get("limit_s", 0),
        budget.get("evaluation_s", 0),
        budget.get("device_hours", 0),
        budget.get("device"),
        budget.get("cost_usd", 0),
    )
    return record.update_summary(verdict={"line": line, **verdict})


def plot_reward(steps: list[dict], path, window: int = 5) -> bool:
    """Reward per step and its rolling mean; False when nothing was logged."""
    points = [(s["step"], float(s["reward"])) for s in steps if isinstance(s.get("reward"), (int, float))]
    if not points:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs, ys = zip(*points)
    rolling = [
        sum(ys[max(0, i - window + 1) : i + 1]) / len(ys[max(0, i - window + 1) : i + 1]) for i in range(len(ys))
    ]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(xs, ys, marker="o", markersize=3, alpha=0.45, label="mean reward of the step's completions")
    ax.plot(xs, rolling, linewidth=2, label=f"rolling mean over {window} steps")
    ax.set_xlabel("training step (optimizer updates)")
    ax.set_ylabel("reward")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
