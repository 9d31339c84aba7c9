"""python -m analysis --report / --workspace: the sweep as a W&B Report and workspace view (wandb-workspaces),
checked against what a real offline sweep (conftest.tiny_sweep) logged to W&B, as `wandb leet inspect`
reads it from its offline runs; nothing here reaches a network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import wandb
import wandb_workspaces.reports.v2 as wr
import wandb_workspaces.workspaces as ws
from wandb_workspaces import expr

import rlvr_sweeps.infra.wandb_server
from analysis import report
from analysis.__main__ import main as analysis_main
from analysis.report import Logged, Views, build_report, build_workspace, local_keys, save
from analysis.sources import load_local
from analysis.tables import all_tables
from conftest import ROOT, OfflineWandbApi, OfflineWandbRun
from rlvr_sweeps.errors import UserError

pytestmark = pytest.mark.xdist_group("tiny_sweep")

TARGET = "me/rlvr-sweeps"
CURVE_KEYS = ["train/reward", "train/rewards/accuracy_reward/mean", "train/completions/mean_length"]


@pytest.fixture(scope="module")
def sweep(tiny_sweep) -> Path:
    return tiny_sweep.folder


@pytest.fixture(scope="module")
def offline_runs(sweep) -> list[OfflineWandbRun]:
    return [OfflineWandbRun(d) for d in sorted(sweep.glob("*/wandb/offline-run-*"))]


@pytest.fixture(scope="module")
def logged(offline_runs) -> Logged:
    """What the sweep's runs really logged to W&B: every history key, every summary key with a value."""
    history = {key for run in offline_runs for key in run.history_keys["keys"]}
    summary = {key for run in offline_runs for key, value in run.summary.items() if value is not None}
    return Logged(history, summary)


def forbid_network(monkeypatch, calls: list) -> None:
    """Any W&B call (probe, API, save) fails the test: pytest.fail raises past `except Exception`."""

    def refuse(what):
        def called(*args, **kwargs):
            calls.append(what)
            pytest.fail(f"{what} was called")

        return called

    monkeypatch.setattr(rlvr_sweeps.infra.wandb_server, "wandb_server_answers", refuse("wandb_server_answers"))
    monkeypatch.setattr(wandb, "Api", refuse("wandb.Api"))
    monkeypatch.setattr(wandb, "init", refuse("wandb.init"))
    monkeypatch.setattr(wr.Report, "save", refuse("Report.save"))
    monkeypatch.setattr(ws.Workspace, "save", refuse("Workspace.save"))


@pytest.fixture(scope="module")
def built(sweep, tmp_path_factory) -> dict:
    """The report and workspace of the tiny sweep's run folders, as JSON, built with the network forbidden."""
    out = tmp_path_factory.mktemp("report")
    calls = []
    with pytest.MonkeyPatch.context() as monkeypatch:
        forbid_network(monkeypatch, calls)
        argv = [str(sweep), "--out", str(out / "analysis_out"), "--wandb", TARGET]
        argv += ["--report-json", str(out / "report.json"), "--workspace-json", str(out / "workspace.json")]
        assert analysis_main(argv) == 0
    assert calls == []
    return {name: json.loads((out / f"{name}.json").read_text()) for name in ("report", "workspace")}


def blocks_of(report_json: dict, kind: str) -> list[dict]:
    return [b for b in report_json["blocks"] if b["type"] == kind]


def panel_keys(panel: dict) -> tuple[str, list[str]]:
    """The keys a panel reads, and where W&B looks them up: history for line plots, summary for bars."""
    if panel["type"] == "LinePlot":
        return "history", [panel["x"], *panel["y"]]
    if panel["type"] in ("BarPlot", "ScalarChart"):
        return "summary", panel["metrics"] if panel["type"] == "BarPlot" else [panel["metric"]]
    return "", []


def test_every_panel_key_is_one_the_offline_runs_logged(built, logged):
    panels = [p for grid in blocks_of(built["report"], "PanelGrid") for p in grid["panels"]]
    panels += [p for section in built["workspace"]["sections"] for p in section["panels"]]
    checked = 0
    for panel in panels:
        kind, keys = panel_keys(panel)
        for key in keys:
            assert key in getattr(logged, kind), (panel["title"], kind, key)
            checked += 1
    assert checked == 2 * (3 * 2 + 2 * 3)  # report and workspace: 3 curves (x and y), pass@1 and @4 (2 + 1 bars)


def test_report_has_a_section_per_init_filtered_to_the_group_and_grouped_by_rank(built, offline_runs, logged):
    assert [h["text"] for h in blocks_of(built["report"], "H2")] == ["Initialization: tiny_math", "Tables"]
    (grid,) = blocks_of(built["report"], "PanelGrid")
    (runset,) = grid["runsets"]
    assert (runset["entity"], runset["project"]) == tuple(TARGET.split("/"))
    leaves = {(f.key.section, f.key.name): f.value for f in expr.expr_to_filters(runset["filters"]).filters}
    assert leaves == {("run", "group"): "tiny_sweep", ("config", "model.value.name"): "tiny_math"}
    grouping = [expr.groupby_str_to_key(g) for g in runset["groupby"]]
    assert grouping == [expr.Key(section="config", name="lora.value.rank")]
    for run in offline_runs:  # the config W&B holds is nested: model.name and lora.rank are where the keys point
        assert run.group == "tiny_sweep" and run.config["model"]["name"] == "tiny_math"
        assert "rank" in run.config["lora"]
    curves = [p for p in grid["panels"] if p["type"] == "LinePlot"]
    assert [p["y"] for p in curves] == [[key] for key in CURVE_KEYS]  # TRL logs no kl with beta = 0: no KL panel
    assert "train/kl" not in logged.history
    assert all(p["x"] == "train/global_step" for p in curves)
    bars = [p for p in grid["panels"] if p["type"] == "BarPlot"]
    assert [p["metrics"] for p in bars] == [
        [f"baseline/sums_heldout/{m}", f"eval/sums_heldout/{m}"] if part == "final" else [f"delta/sums_heldout/{m}"]
        for m in ("pass@1", "pass@4")
        for part in ("final", "delta")
    ]
    for panel in grid["panels"]:
        assert panel["groupby"] == {"type": "Config", "name": "lora.rank"} and panel["groupby_aggfunc"] == "mean"


def test_report_holds_the_analysis_tables_and_a_header(built, sweep):
    markdown = [b["text"] for b in blocks_of(built["report"], "MarkdownBlock")]
    runs, _ = load_local([str(sweep)])
    tables = all_tables(runs, 0.02)
    assert {"sums_heldout/pass@1", "sums_heldout/pass@4", "significance"} <= {t.name for t in tables}
    assert markdown[1:] == [table.markdown() for table in tables]  # intervals, * and † flags as printed
    header = markdown[0]
    assert "`tiny_sweep`" in header and "6 runs" in header and "tiny_math" in header and "sums_heldout" in header
    assert f"Budget (`budget.name`): {runs['budget'].iloc[0]}" in header and "r=8, r=64, r=256, full FT" in header


def test_workspace_groups_by_init_then_rank_with_a_color_per_rank(built, sweep, logged):
    workspace = built["workspace"]
    settings = workspace["runset_settings"]
    assert settings["filters"] == "Metric(\"Group\") == 'tiny_sweep'"
    assert settings["groupby"] == [{"type": "Config", "name": "model.name"}, {"type": "Config", "name": "lora.rank"}]
    colors = settings["group_colors"]
    assert colors["GroupPath('tiny_math', '8')"] != colors["GroupPath('tiny_math', '64')"]
    assert [s["name"] for s in workspace["sections"]] == ["Training curves", "sums_heldout: Pass@k", "Tables"]
    runs, _ = load_local([str(sweep)])
    view = build_workspace(Views(runs, all_tables(runs, 0.02), local_keys(runs), TARGET, "tiny_sweep"))
    grouping = view._to_model().spec.section.run_sets[0].grouping  # the wire format, built offline
    assert [(k.section, k.name) for k in grouping] == [("config", "model.value.name"), ("config", "lora.value.rank")]
    tables = [p["markdown"] for p in workspace["sections"][-1]["panels"]]
    assert tables[1:] == [table.markdown() for table in all_tables(runs, 0.02)]


def test_the_local_keys_are_those_the_runs_logged_to_wandb(sweep, logged):
    runs, _ = load_local([str(sweep)])
    local = local_keys(runs)
    assert set(CURVE_KEYS) | {"train/global_step"} <= local.history <= logged.history
    assert {"eval/sums_heldout/pass@1", "delta/sums_heldout/pass@4"} <= local.summary <= logged.summary


def test_a_kl_panel_when_the_runs_logged_kl(sweep):
    runs, _ = load_local([str(sweep)])
    keys = local_keys(runs)
    with_kl = Logged(keys.history | {"train/kl"}, keys.summary)
    made = build_report(Views(runs, [], with_kl, TARGET, "tiny_sweep"))
    (grid,) = [b for b in made.blocks if isinstance(b, wr.PanelGrid)]
    assert [p.y for p in grid.panels if isinstance(p, wr.LinePlot)][-1] == ["train/kl"]


def test_a_key_no_run_logged_stops_before_any_network(sweep, tmp_path, monkeypatch, capsys):
    calls = []
    forbid_network(monkeypatch, calls)
    argv = [str(sweep), "--out", str(tmp_path), "--wandb", TARGET, "--report", "--workspace", "--log-to-wandb"]
    assert analysis_main([*argv, "--benchmarks", "aime24"]) == 2
    error = capsys.readouterr().err.strip()
    assert "eval/aime24/pass@1" in error and "eval/sums_heldout/pass@1" in error and "\n" not in error
    runs, _ = load_local([str(sweep)])
    with pytest.raises(UserError, match="summary key eval/aime24/pass@1, which no run of the sweep logged"):
        build_workspace(Views(runs, [], local_keys(runs), TARGET, "tiny_sweep", benchmarks=["aime24"]))
    history_only = Logged(local_keys(runs).history - {"train/completions/mean_length"}, local_keys(runs).summary)
    with pytest.raises(UserError, match="history key train/completions/mean_length.*train/reward"):
        build_report(Views(runs, [], history_only, TARGET, "tiny_sweep"))
    assert calls == []


def test_a_sweep_without_evaluation_stops_before_any_network(tiny_sweep, tmp_path, monkeypatch, capsys):
    calls = []
    forbid_network(monkeypatch, calls)
    unevaluated = str(tiny_sweep.run_dir(None, 0))  # full fine-tuning with eval=[]
    assert analysis_main([unevaluated, "--out", str(tmp_path), "--wandb", TARGET, "--report"]) == 2
    error = capsys.readouterr().err
    assert "summary key eval/<benchmark>/pass@1, which no run of the sweep logged" in error
    assert (
        "budget/*, git_commit, global_step, lora/*, model/*" in error
        and "train/*" in error
        and "\n" not in error.strip()
    )
    assert calls == []


def test_the_wandb_source_builds_the_same_report(built, offline_runs, tmp_path):
    argv = ["--wandb", TARGET, "--group", "tiny_sweep", "--out", str(tmp_path), "--report-json", str(tmp_path / "r")]
    assert analysis_main(argv, api=OfflineWandbApi(offline_runs)) == 0
    remote = json.loads((tmp_path / "r").read_text())
    tables_start = next(i for i, b in enumerate(built["report"]["blocks"]) if b.get("text") == "Tables")
    assert remote["blocks"][:tables_start] == built["report"]["blocks"][:tables_start]  # W&B: no per-sample intervals


class SavedReport:
    def __init__(self, display_name, id):
        self.display_name, self.id = display_name, id


class ViewsApi:
    """A stand-in for wandb.Api() that holds one saved report and one saved workspace view."""

    def __init__(self, title):
        self.title, self.queries = title, []
        self._service_api = self  # what wandb_workspaces' execute_graphql calls

    def reports(self, path):
        return [SavedReport("another report", "other"), SavedReport(self.title, "saved-report")]

    def execute_graphql(self, query, variables):
        self.queries.append(variables)
        return {"project": {"allViews": {"edges": [{"node": {"id": "saved-view", "displayName": self.title}}]}}}


def test_saving_updates_the_report_or_view_of_the_same_title(sweep, tmp_path, monkeypatch):
    runs, _ = load_local([str(sweep)])
    logged = local_keys(runs)
    saved = []
    monkeypatch.setattr(wr.Report, "save", lambda self: saved.append(self.id))
    monkeypatch.setattr(wr.Report, "url", property(lambda self: f"https://w/{self.id}"))
    monkeypatch.setattr(ws.Workspace, "save", lambda self: saved.append(self._internal_id))
    monkeypatch.setattr(ws.Workspace, "url", property(lambda self: f"https://w/{self._internal_name}"))
    made = build_report(Views(runs, [], logged, TARGET, "tiny_sweep"))
    assert save(made, tmp_path, ViewsApi(made.title)) == "https://w/saved-report" and saved == ["saved-report"]
    fresh = build_report(Views(runs, [], logged, TARGET, "tiny_sweep", title="a new title"))
    assert save(fresh, tmp_path, ViewsApi("no such title")) == "https://w/" and saved[-1] == ""
    names = []
    for _ in range(2):  # the same title: the same view name, and the saved view's id
        view = build_workspace(Views(runs, [], logged, TARGET, "tiny_sweep"))
        api = ViewsApi(view.name)
        names.append(save(view, tmp_path, api))
        assert saved[-1] == "saved-view" and api.queries[0]["viewName"] == view._internal_name
    assert names[0] == names[1]


def run_analysis(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_API_KEY": "a" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "analysis", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )


def test_unreachable_wandb_gets_one_line_naming_the_offline_alternatives(sweep, tmp_path):
    saving = run_analysis(tmp_path, str(sweep), "--wandb", TARGET, "--report")
    assert saving.returncode == 2 and "Traceback" not in saving.stderr
    (line,) = [line for line in saving.stderr.splitlines() if "--report-json" in line]
    assert line.startswith("Could not save the report to W&B") and "analysis_out/" in line
    assert (tmp_path / "analysis_out" / "sums_heldout_pass1.csv").exists()  # the alternative is there
    reading = run_analysis(tmp_path, "--wandb", TARGET, "--group", "tiny_sweep", "--report")
    assert reading.returncode == 2 and "Traceback" not in reading.stderr
    (line,) = [line for line in reading.stderr.splitlines() if "--report-json" in line]
    assert line.startswith("Could not reach W&B") and "analysis_out/" in line


def test_the_cli_needs_an_entity_and_a_project_for_the_report(sweep, capsys):
    with pytest.raises(SystemExit):
        analysis_main([str(sweep), "--report-json", "r.json"])
    assert "--wandb ENTITY/PROJECT" in capsys.readouterr().err
    assert report.config_key("model.name") == "model.value.name"
