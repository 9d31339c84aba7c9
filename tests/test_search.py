"""search=two_stage (planning.search): the promotion rule, the design's checks, what both stages cost against
the grids, and by simulation (benchmarks/two_stage_simulation.py) that promotion picks best rates more often with a
later milestone and that the verdict on the stage-2 seeds marks a null at most at its nominal rate."""

from __future__ import annotations

import gc
import importlib.util
import math

import pytest
from omegaconf import OmegaConf

from conftest import ROOT
from rlvr_sweeps.errors import UserError
from rlvr_sweeps.planning.search import TwoStage, cost_lines, costs, promote


def simulation():
    spec = importlib.util.spec_from_file_location(
        "two_stage_simulation", ROOT / "benchmarks" / "two_stage_simulation.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def no_full_collections(monkeypatch):
    """statsmodels' Holm runs gc.collect() on every call (0.1 s with torch loaded); the simulation calls it often."""
    monkeypatch.setattr(gc, "collect", lambda *args: 0)


def test_promotion_keeps_each_ranks_best_scores_and_never_a_failed_arm():
    scores = {
        (8, 1e-5): [0.2, 0.4],  # mean 0.3
        (8, 3e-5): [0.3],
        (8, 1e-4): [None, math.nan],  # both runs failed: no score
        (64, 1e-6): [0.5],
        (64, 1e-5): [0.5],  # a tie: the lower rate
        (64, 1e-4): [0.1],
    }
    assert promote(scores, 1) == {8: [1e-5], 64: [1e-6]}
    assert promote(scores, 2) == {8: [1e-5, 3e-5], 64: [1e-6, 1e-5]}
    assert promote(scores, 5)[8] == [1e-5, 3e-5]  # the failed arm is not among them


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("milestone", 1.0, "in \\(0, 1\\)"), ("stage2_seeds", 0, "at least 1"), ("promote", "two", "must be numbers")],
)
def test_a_design_that_cannot_run_is_refused_in_one_line(field, value, message):
    cfg = OmegaConf.create({"milestone": 0.25, "stage1_seeds": 1, "promote": 1, "stage2_seeds": 3, field: value})
    with pytest.raises(UserError, match=message) as refused:
        TwoStage.from_config(cfg)
    assert "\n" not in str(refused.value)


def test_the_costs_of_both_stages_and_of_the_grids():
    """4 ranks x 5 rates, a full run 23.7 device-hours, a stage-1 run to 0.25 of the budget 6 device-hours."""
    found = costs(TwoStage(0.25, 1, 1, 3), 4, 5, 23.7, 6.0)
    assert (found.stage1_runs, found.continued_runs, found.stage2_runs, found.grid_runs) == (20, 4, 12, 20)
    assert found.stage1_hours == pytest.approx(120) and found.continued_hours == pytest.approx(4 * 17.7)
    assert found.stage2_hours == pytest.approx(12 * 23.7) and found.grid_hours == pytest.approx(20 * 23.7)
    assert found.total_hours == pytest.approx(120 + 70.8 + 284.4) and found.grid3_hours == pytest.approx(3 * 474)
    lines = cost_lines(found, TwoStage(0.25, 1, 1, 3), "A40")
    assert "475.2 A40-hours in all" in lines[0] and "474.0 A40-hours" in lines[1]
    priced = cost_lines(found, TwoStage(0.25, 1, 1, 3), "A40", price=0.44)
    assert "475.2 A40-hours, $209 in all" in priced[0] and "1422.0 A40-hours, $626" in priced[1]
    two_seeds = costs(TwoStage(0.25, 2, 2, 3), 4, 5, 23.7, 6.0)
    assert (two_seeds.stage1_runs, two_seeds.continued_runs, two_seeds.stage2_runs) == (40, 16, 24)


def test_promotion_picks_the_best_rate_more_often_with_a_later_milestone():
    """A rate one step above a rank's best leads early and falls back: at 0.125 of the budget promotion is fooled
    by it whatever the seeds; at 0.5 it picks the best rate for most ranks. Chance is 1 in 5."""
    sim = simulation()
    early = sim.picking_rate(TwoStage(0.125, 1, 1, 3), 300, seed=1)
    late = sim.picking_rate(TwoStage(0.5, 3, 1, 3), 300, seed=1)
    assert late > 0.55 and late > early + 0.2


def test_the_verdict_on_stage_two_seeds_marks_a_null_at_most_at_its_nominal_rate():
    """No rank better than another at any rate: the verdict between ranks, made on runs that did not choose, marks
    about 5% of rank pairs or fewer (Holm over the pairs)."""
    searches, pairs = 400, 6
    rate = simulation().false_positive_rate(TwoStage(0.25, 1, 1, 3), searches, seed=2)
    assert rate <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / (searches * pairs))
