"""Shared test helpers: compose configs as launch.py does, run launch.py for real in a subprocess with
its own runs folder, and the tiny model built once per session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTED_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class Launch:
    returncode: int
    stdout: str
    stderr: str
    runs: Path

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def run_dirs(self, name: str = "default") -> list[Path]:
        return sorted(p for p in (self.runs / name).iterdir() if (p / "summary.json").exists())

    def summary(self, run_dir: Path) -> dict:
        return json.loads((run_dir / "summary.json").read_text())


def pytest_configure(config):
    """`make test` runs `-n 2 --dist loadgroup`: each xdist_group must reach one worker (one tiny sweep, one
    SLURM cluster user at a time). pytest-xdist 3.8 marks grouped ids in a way pytest 9 ignores."""
    dist = config.getoption("dist", default="no")
    if dist == "loadgroup" and int(pytest.__version__.split(".")[0]) >= 9:
        raise pytest.UsageError("--dist loadgroup does not group tests on pytest 9: pip install 'pytest<9'")


def compose_run(*overrides: str, config_name: str = "config"):
    """Hydra's composition as launch.py makes it (config_name="evaluate": as `python -m rlvr_sweeps.evaluate`
    does), with the hydra node and HydraConfig set, so that ${hydra:...} resolves; and the task config the
    run gets: (root, task)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    import rlvr_sweeps.resolvers  # noqa: F401

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # resolves ${hydra:...}, the run folder's name too
    OmegaConf.set_readonly(cfg.hydra, False)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(cfg.hydra.run.dir)
    HydraConfig.instance().set_config(cfg)
    return cfg, OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])


def compose_config(*overrides: str):
    """The resolved config launch.py would run with these overrides (Hydra's own composition)."""
    from omegaconf import OmegaConf

    _, task = compose_run(*overrides)
    OmegaConf.resolve(task)
    return task


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory, worker_id) -> Path:
    """One cache of built models and baselines per test session, shared by pytest-xdist's workers (the
    builds are locked and published atomically, as for concurrent SLURM jobs)."""
    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if worker_id != "master" else base) / "model-cache"
    shared.mkdir(exist_ok=True)
    return shared


@contextmanager
def environment(**values: str):
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_in_process(entry, runs: Path, cache: Path, *overrides: str, config_name: str = "config"):
    """An entry point's function (train, evaluate) on the task config Hydra composes for these overrides, in
    this process, with the runs folder and model cache a launch would get: what it returns."""
    with environment(RLVR_SWEEPS_RUNS=str(runs), RLVR_SWEEPS_CACHE=str(cache), WANDB_SILENT="true"):
        _, task = compose_run(*overrides, config_name=config_name)
        return entry(task)


def train_in_process(runs: Path, cache: Path, *overrides: str) -> dict:
    """`python launch.py <overrides>` in this process: the same composition, run folder and train(); for
    tests that need trained runs rather than launch.py's exit code and messages (no interpreter start-up)."""
    from rlvr_sweeps.train import train

    return run_in_process(train, runs, cache, *overrides)


def evaluate_in_process(runs: Path, cache: Path, *overrides: str) -> tuple[dict, Path]:
    """`python -m rlvr_sweeps.evaluate <overrides>` in this process (as evaluate_cli, without the interpreter
    start-up and imports): its summary and its folder."""
    from rlvr_sweeps.evaluate import evaluate

    run_in_process(evaluate, runs, cache, *overrides, config_name="evaluate")
    return evaluation_in(runs)


def grpo_args(cfg, output_dir, hardware=None, reward_weights=(1.0,)):
    """TRL's GRPOConfig for a composed config, as train() builds it: lora.lr_rule applied once and recorded in
    cfg.lora.effective_learning_rate (a config without a lora node: trainer.learning_rate)."""
    from rlvr_sweeps.infra.hardware import Hardware
    from rlvr_sweeps.policy.adapters import resolve_learning_rate
    from rlvr_sweeps.training.trainer import grpo_config

    rate = resolve_learning_rate(cfg.lora, cfg.trainer.learning_rate) if "lora" in cfg else cfg.trainer.learning_rate
    return grpo_config(
        cfg.trainer,
        cfg.generation,
        learning_rate=rate,
        max_steps=cfg.budget.max_steps,
        output_dir=str(output_dir),
        hardware=hardware or Hardware("cpu", "cpu", 2),
        run_name="t",
        reward_weights=list(reward_weights),
    )


def adapter(rank: int, variant: str = "lora", dropout: float = 0.0):
    """PEFT's LoraConfig of lora.variant at this rank (alpha = 2 r, every linear layer), PiSSA with its SVD start."""
    from omegaconf import OmegaConf

    from rlvr_sweeps.policy.adapters import lora_config

    cfg = {"rank": rank, "variant": variant, "alpha": None, "alpha_ratio": 2, "dropout": dropout}
    cfg = OmegaConf.create({**cfg, "target_modules": "all-linear"})
    return lora_config(cfg, init_lora_weights="pissa" if variant == "pissa" else True)


def training_bounds(summary: dict, steps_below: float = 1.0) -> tuple[float, float]:
    """The training seconds a run stopped by its budget may have used: at least its limit minus
    `steps_below` of its slowest steps and a save, at most its limit plus half a step. The stop is
    predicted from measured step and save times, and on a shared machine (CI runs three test stages on
    two cores) the last step and save can run slower than any before them (the prediction rule itself is
    unit-tested in test_budget)."""
    limit, timings = summary["budget"]["limit_s"], summary["timings"]
    save = timings["mean_checkpoint_save_s"] or 0
    return limit - steps_below * (timings["max_step_s"] + save), limit + 0.5 * timings["max_step_s"]


def launch_env(runs: Path, cache: Path, extra: dict | None = None) -> dict:
    """The environment of a launch.py subprocess: its own runs folder, the session's model cache, no
    W&B key unless given, and none of the distributed variables an in-process vLLM test leaves behind."""
    env = {
        **os.environ,
        "RLVR_SWEEPS_RUNS": str(runs),
        "RLVR_SWEEPS_CACHE": str(cache),
        "WANDB_SILENT": "true",
        "HYDRA_FULL_ERROR": "0",
        **(extra or {}),
    }
    if "WANDB_API_KEY" not in (extra or {}):
        env.pop("WANDB_API_KEY", None)
    for leaked in DISTRIBUTED_ENV:
        env.pop(leaked, None)
    return env


@pytest.fixture
def launch(tmp_path, model_cache):
    """Run `python launch.py *args` in a subprocess; runs land in tmp_path/runs."""

    def run(*args: str, env: dict | None = None, timeout: float = 600) -> Launch:
        runs = tmp_path / "runs"
        done = subprocess.run(
            [sys.executable, str(ROOT / "launch.py"), *args],
            cwd=tmp_path,
            env=launch_env(runs, model_cache, env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Launch(done.returncode, done.stdout, done.stderr, runs)

    return run


@pytest.fixture(scope="session")
def tiny_folder(model_cache) -> Path:
    """The tiny random model (conf/model/tiny.yaml), built once per session."""
    from omegaconf import OmegaConf

    from rlvr_sweeps.policy.models import model_folder

    return Path(model_folder(OmegaConf.load(ROOT / "conf" / "model" / "tiny.yaml"), model_cache))


# A sweep that learns something in seconds: tiny_math (the tiny model after a little SFT on 1-digit sums)
# on data=sums, so that rewards vary, the adapter moves and checkpoints score differently; checkpoint
# selection on the held-out sums with the final evaluation's own sampling.
TINY_SWEEP = (
    "name=tiny_sweep",
    "model=tiny_math",
    "data=sums",
    "eval=[sums_heldout]",
    "budget.max_steps=6",
    "trainer.save_steps=2",
    "trainer.learning_rate=0.003",
    "trainer.max_completion_length=16",
    "eval.sampling.n=4",
    "eval.sampling.k=[1,4]",
    "eval.select_on=sums_heldout",
    "eval.selection.n=4",
    "eval.selection.k=[1,4]",
)


@dataclass
class Sweep:
    """The tiny sweep's folder, and its runs by (rank, seed); rank None is full fine-tuning."""

    folder: Path
    runs: dict
    failure: str  # what the run with wrong data columns raised (checked in test_training, not here)

    def run_dir(self, rank=8, seed=0) -> Path:
        return Path(self.runs[(rank, seed)]["run_dir"])


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory, model_cache) -> Sweep:
    """2 LoRA ranks x 2 seeds, a run that fails while loading its data, and full fine-tuning without
    evaluation: trained in this process once per session (mark users xdist_group("tiny_sweep"))."""
    runs = tmp_path_factory.mktemp("tiny-sweep") / "runs"
    done = {}
    for rank in (8, 64):
        for seed in (0, 1):
            arm = (f"lora.rank={rank}", f"trainer.seed={seed}")
            done[(rank, seed)] = train_in_process(runs, model_cache, *TINY_SWEEP, *arm)
    wrong_columns = runs.parent / "wrong_columns.jsonl"  # fails while loading its data, after W&B has started
    wrong_columns.write_text('{"question": "1 + 1?", "solution": "2"}\n')
    try:
        train_in_process(runs, model_cache, *TINY_SWEEP, "lora.rank=256", "data=open_rs", f"data.path={wrong_columns}")
        failure = ""
    except Exception as err:  # noqa: BLE001 - the failed run is part of the sweep; its message is a test's
        failure = f"{type(err).__name__}: {err}"
    plain = [o for o in TINY_SWEEP if not o.startswith(("eval", "trainer.save"))]  # no evaluation at all
    done[(None, 0)] = train_in_process(runs, model_cache, *plain, "lora=none", "eval=[]")
    return Sweep(runs / "tiny_sweep", done, failure)


def evaluate_cli(runs: Path, cache: Path, *args: str, timeout: float = 900) -> tuple[dict, Path]:
    """`python -m rlvr_sweeps.evaluate *args` in a subprocess: its summary and its folder (one per runs folder)."""
    done = subprocess.run(
        [sys.executable, "-m", "rlvr_sweeps.evaluate", *args],
        cwd=ROOT,
        env=launch_env(runs, cache),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return evaluation_in(runs)


def evaluation_in(runs: Path) -> tuple[dict, Path]:
    """The one evaluation folder in a runs folder: its summary, and the folder."""
    (summary,) = (runs / "evaluate").glob("*/summary.json")
    return json.loads(summary.read_text()), summary.parent


class OfflineWandbRun:
    """A stand-in for wandb.apis.public.Run (reading needs a W&B server), from the records of a real offline
    run as `wandb leet inspect` prints them; history_keys in the form of W&B's historyKeys."""

    def __init__(self, offline_dir: Path):
        def inspect(*flags):
            done = subprocess.run(
                [sys.executable, "-m", "wandb", "leet", "inspect", "--json", *flags, str(offline_dir)],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr
            return done.stdout

        state = json.loads(inspect("--summary"))
        records = [json.loads(line) for line in inspect().splitlines() if line.strip()]
        run_record = next(r["run"] for r in records if r["type"] == "run")
        self.name, self.group, self.tags = run_record["display_name"], run_record["run_group"], run_record["tags"]
        self.config, self.summary = state["config"], state["summary"]
        self._history = [r["history"]["item"] for r in records if r["type"] == "history"]
        self.history_keys = {"keys": {key: {} for row in self._history for key in row if not key.startswith("_")}}

    def scan_history(self, keys):
        return [row for row in self._history if all(k in row for k in keys)]


class OfflineWandbApi:
    """A stand-in for wandb.Api(): .runs(path, filters) over OfflineWandbRuns (group and tags filters), no
    saved reports."""

    def __init__(self, runs):
        self._runs = runs

    def runs(self, path, filters=None):
        filters = filters or {}
        return [
            r
            for r in self._runs
            if filters.get("group") in (None, r.group)
            and ("tags" not in filters or set(filters["tags"]["$in"]) & set(r.tags))
        ]

    def reports(self, path):
        return []
