"""Pass@k evaluation on benchmarks with known answers, through transformers or vLLM.

For each problem, n completions are sampled with the benchmark's settings and scored with
math-verify (gold first). A completion cut at max_new_tokens counts as wrong and as truncated.
Pass@k uses the unbiased estimator 1 - C(n-c, k) / C(n, k); Pass@1 is the mean accuracy.
Checkpoint selection evaluates its benchmark with settings of its own (`eval.selection`: fewer
samples on a fixed subset of the problems), so that it stays a small share of a run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from transformers import TrainerCallback

from ..errors import UserError
from ..generation.sampling import Benchmark, Completion, benchmarks_from_config, selection_benchmark
from ..run.record import atomic_write
from ..tasks.data import load_problems, render_prompt, tokenize_prompts
from ..tasks.verifier import MathVerifier
from .significance import evaluation_variance

log = logging.getLogger(__name__)


@dataclass
class Sample:
    """One evaluated completion: a line of eval/<phase>/<benchmark>.jsonl."""

    problem_id: str
    """The problem's stable id (source/seed/index)."""
    sample: int
    """The sample's index among the problem's n."""
    answer: str
    """The gold answer."""
    extracted: str | None
    """The answer math-verify read from the completion."""
    correct: bool
    """Verified correct and not truncated."""
    length: int
    """Completion tokens."""
    truncated: bool
    """Cut at max_new_tokens (then counted as wrong)."""
    text: str | None = None
    """The completion itself, kept with eval.save_text=true."""
    seed: int | None = None
    """The evaluation's sampling seed (eval.seed, or the selection's own): no reported sample repeats a
    sample that chose the checkpoint. None in records written before it was kept."""


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased Pass@k (Chen et al., 2021): 1 - C(n-c, k) / C(n, k), as a stable product."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    product = 1.0
    for i in range(k):
        product *= (n - c - i) / (n - i)
    return 1.0 - product


def score(
    benchmark: Benchmark,
    problems: list[dict],
    completions: list[list[Completion]],
    verifier: MathVerifier,
    keep_text: bool = False,
    seed: int | None = None,
) -> tuple[dict, list[Sample]]:
    samples: list[Sample] = []
    per_problem_correct = []
    for problem, outputs in zip(problems, completions, strict=True):
        verdicts = verifier.verify_many([problem["answer"]] * len(outputs), [o.text for o in outputs])
        correct = 0
        for index, (output, verdict) in enumerate(zip(outputs, verdicts, strict=True)):
            ok = verdict.correct and not output.truncated
            correct += ok
            samples.append(
                Sample(
                    problem["problem_id"],
                    index,
                    problem["answer"],
                    verdict.extracted,
                    ok,
                    output.tokens,
                    output.truncated,
                    output.text if keep_text else None,
                    seed,
                )
            )
        per_problem_correct.append(correct)
    n, count = benchmark.n, len(problems)
    metrics = {f"pass@{k}": sum(pass_at_k(n, c, k) for c in per_problem_correct) / count for k in benchmark.ks}
    metrics["pass@1"] = sum(per_problem_correct) / (n * count)  # mean accuracy over all samples
    metrics["mean_length"] = sum(s.length for s in samples) / len(samples)
    metrics["truncated"] = sum(s.truncated for s in samples) / len(samples)
    metrics.update(problems=count, n=n)
    return metrics, samples


def pass1_standard_error(samples: list[Sample]) -> float:
    """The standard error of Pass@1 from evaluating again with other samples (problems fixed):
    what a baseline shared by many runs contributes to each run's change (significance.evaluation_variance)."""
    outcomes: dict[str, list[bool]] = {}
    for sample in samples:
        outcomes.setdefault(str(sample.problem_id), []).append(bool(sample.correct))
    return evaluation_variance(outcomes) ** 0.5


@contextlib.contextmanager
def untouched_rng():
    """Torch's random state (CPU and every CUDA device) as it was before: an evaluation seeds its own sampling, and
    the training it interrupts goes on drawing what it would have drawn without it (a run whose baseline came
    from the cache, or with a selection evaluation at a milestone, trains exactly the same steps)."""
    import torch

    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        yield


class Evaluator:
    """Runs every configured benchmark through one generator and writes per-sample records."""

    def __init__(
        self,
        eval_cfg: DictConfig,
        prompt_cfg: DictConfig,
        tokenizer,
        verifier: MathVerifier,
        out_dir: Path,
        exclude_questions: set[str] | None = None,
        baseline_cache: Path | None = None,
        model_key: str = "",
        chat_template_kwargs: dict | None = None,
    ):
        self.cfg = eval_cfg
        self.chat_template_kwargs = chat_template_kwargs  # as training passes them (trainer.chat_template_kwargs)
        self.baseline_cache = baseline_cache
        self.model_key = model_key
        self.prompt_cfg = prompt_cfg
        self.tokenizer = tokenizer
        self.verifier = verifier
        self.out_dir = Path(out_dir)
        self.benchmarks = benchmarks_from_config(eval_cfg)
        self.selection = selection_benchmark(eval_cfg, self.benchmarks)
        self.exclude_questions = exclude_questions or set()
        self._problems: dict[str, list[dict]] = {}

    def problems(self, benchmark: Benchmark) -> list[dict]:
        if benchmark.name not in self._problems:
            problems = load_problems(benchmark.cfg)
            kept = [p for p in problems if p["question"] not in self.exclude_questions]
            if len(kept) < len(problems):
                log.info(
                    "%s: dropped %d problems that are also training problems",
                    benchmark.name,
                    len(problems) - len(kept),
                )
            if not kept:
                raise UserError(f"Benchmark {benchmark.name} has no problems left to evaluate.")
            self._problems[benchmark.name] = kept
        return self._problems[benchmark.name][: benchmark.max_problems]

    def prompt_ids(self, problems: list[dict]) -> list[list[int]]:
        """Prompt token ids, made from the project's template as training makes them (data.tokenize_prompts)."""
        conversational = bool(getattr(self.tokenizer, "chat_template", None))
        rendered = [render_prompt(p["question"], self.prompt_cfg, conversational) for p in problems]
        return tokenize_prompts(self.tokenizer, rendered, self.chat_template_kwargs)

    @property
    def selection_seed(self) -> int:
        """The selection's own sampling seed (eval.selection.seed; by default eval.seed + 1): the samples that
        choose a checkpoint are never the samples its reported numbers are computed from."""
        own = (self.cfg.get("selection") or {}).get("seed")
        return int(own) if own is not None else int(self.cfg.seed) + 1

    def run(
        self,
        generator,
        phase: str,
        benchmarks: list[Benchmark] | None = None,
        seed: int | None = None,
        weights: str | None = None,
    ) -> dict[str, dict]:
        """Evaluate `benchmarks` (all configured ones by default) with `seed` (eval.seed by default);
        per-sample records go to eval/<phase>/.

        `weights` names the weights evaluated (e.g. the checkpoint final/ came from): each finished benchmark
        is then kept in the run folder (eval/<phase>/<benchmark>.done.json), and a job that evaluates the
        same weights again (requeued during a long final evaluation) reuses it instead of generating anew."""
        results = {}
        seed = int(self.cfg.seed) if seed is None else int(seed)
        for benchmark in self.benchmarks if benchmarks is None else benchmarks:
            cache = self._cache_path(benchmark, generator) if phase == "baseline" else None
            done = self.out_dir / phase / f"{benchmark.name}.done.json" if weights else None
            finished = self._finished(done, phase, benchmark, weights, seed)
            if finished is not None:
                metrics, samples = finished
            elif cache is None:
                metrics, samples = self._generate(benchmark, generator, seed)
            else:
                metrics, samples = self._baseline(benchmark, generator, cache)
            metrics["se_pass@1"] = round(pass1_standard_error(samples), 6)  # also for baselines cached before it
            self._write_samples(phase, benchmark.name, samples)
            if done is not None and finished is None:
                atomic_write(done, json.dumps({"weights": weights, "seed": seed, "metrics": metrics}) + "\n")
            log.info(
                "%s %s: %s",
                phase,
                benchmark.name,
                ", ".join(f"{k}={v:.3f}" for k, v in metrics.items() if k.startswith("pass@")),
            )
            results[benchmark.name] = metrics
        return results

    def _finished(self, done: Path | None, phase: str, benchmark: Benchmark, weights, seed: int):
        """The metrics and samples of this benchmark that an earlier job finished on the same weights."""
        if done is None or not done.exists():
            return None
        try:
            kept = json.loads(done.read_text())
            records = [json.loads(line) for line in (self.out_dir / phase / f"{benchmark.name}.jsonl").open()]
        except (OSError, json.JSONDecodeError):
            return None
        if kept.get("weights") != weights or kept.get("seed") != seed:
            return None
        log.info("%s %s: finished by an earlier job on the same weights, reused", phase, benchmark.name)
        return {**kept["metrics"], "reused": True}, [Sample(**record) for record in records]

    def _generate(self, benchmark: Benchmark, generator, seed: int) -> tuple[dict, list[Sample]]:
        problems = self.problems(benchmark)
        started = time.monotonic()
        with untouched_rng():  # evaluating (or reading a cached baseline instead) never changes how training samples
            completions = generator.generate(self.prompt_ids(problems), benchmark, seed=seed)
        metrics, samples = score(benchmark, problems, completions, self.verifier, bool(self.cfg.save_text), seed)
        metrics["seconds"] = round(time.monotonic() - started, 3)
        # measured throughput: a sweep's next plan estimates its evaluations from it (sweep.measured_throughput)
        metrics["generated_tokens"] = sum(sample.length for sample in samples)
        metrics["tokens_per_s"] = round(metrics["generated_tokens"] / max(metrics["seconds"], 1e-9), 3)
        return metrics, samples

    def _baseline(self, benchmark: Benchmark, generator, cache: Path) -> tuple[dict, list[Sample]]:
        """The untrained model's evaluation, computed once for every run that starts from it: the ranks of one
        model start together as one job array, and the others wait for the first under a file lock (the
        baseline, with the longest answers, is the costliest evaluation of a run)."""
        from filelock import FileLock

        cache.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(cache) + ".lock"):
            if cache.exists():  # the same untrained model, benchmark and sampling: computed by an earlier job
                cached = json.loads(cache.read_text())
                return {**cached["metrics"], "cached": True}, [Sample(**s) for s in cached["samples"]]
            metrics, samples = self._generate(benchmark, generator, int(self.cfg.seed))
            atomic_write(cache, json.dumps({"metrics": metrics, "samples": [asdict(s) for s in samples]}))
            return metrics, samples

    def _cache_path(self, benchmark: Benchmark, generator) -> Path | None:
        """Baselines are shared by every run of a sweep that starts from the same model."""
        if self.baseline_cache is None or not self.model_key:
            return None
        scoring = {"literal_numbers": bool(getattr(self.verifier, "literal_numbers", False))}
        digest = baseline_cache_key(
            self.model_key,
            benchmark,
            self.prompt_cfg,
            self.cfg,
            type(generator).__name__,
            self.exclude_questions,
            scoring,
        )
        return self.baseline_cache / f"{benchmark.name}-{digest}.json"

    def _write_samples(self, phase: str, name: str, samples: list[Sample]) -> None:
        atomic_write(  # a job killed while writing leaves the previous file or none, never half a file
            self.out_dir / phase / f"{name}.jsonl",
            "".join(
                json.dumps({k: v for k, v in asdict(s).items() if v is not None or k == "extracted"}) + "\n"
                for s in samples
            ),
        )


def baseline_cache_key(
    model_key: str,
    benchmark: Benchmark,
    prompt_cfg: DictConfig,
    eval_cfg: DictConfig,
    backend: str,
    exclude_questions: set[str],
    scoring: dict | None = None,
) -> str:
    """Everything that changes an untrained model's scores: the model (folder, revision, dtype), the
    benchmark and its sampling, the prompt, the seed and batching, the backend, the problems left out,
    how answers are checked (reward.literal_numbers), and this project's version."""
    try:
        version = metadata.version("rlvr-sweeps")
    except metadata.PackageNotFoundError:
        version = "unknown"
    key = {
        "model": model_key,
        "benchmark": OmegaConf.to_container(benchmark.cfg, resolve=True),
        "sampling": [
            benchmark.n,
            list(benchmark.ks),
            benchmark.temperature,
            benchmark.top_p,
            benchmark.max_new_tokens,
            benchmark.max_problems,
        ],
        "prompt": OmegaConf.to_container(prompt_cfg, resolve=True),
        "seed": int(eval_cfg.seed),
        "batch_size": int(eval_cfg.batch_size),
        "backend": backend,
        "version": version,
        "exclude": hashlib.sha256("\n".join(sorted(exclude_questions)).encode()).hexdigest(),
        "scoring": scoring or {},
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def flat_metrics(results: dict[str, dict[str, dict]]) -> dict[str, float]:
    """Stable names for summaries and W&B: eval/<bench>/pass@1, baseline/<bench>/pass@1, delta/..."""
    flat = {}
    for phase, label in (("baseline", "baseline"), ("final", "eval")):
        for bench, metrics in (results.get(phase) or {}).items():
            for key, value in metrics.items():
                if key.startswith("pass@") or key in ("mean_length", "truncated", "se_pass@1"):
                    flat[f"{label}/{bench}/{key}"] = value
    for key in [k for k in flat if k.startswith("eval/") and not k.endswith("/se_pass@1")]:
        base = "baseline/" + key[len("eval/") :]
        if base in flat:
            flat["delta/" + key[len("eval/") :]] = flat[key] - flat[base]
    return flat


class CheckpointSelection(TrainerCallback):
    """Evaluates the selection benchmark at every saved checkpoint (on the meter's evaluation clock) and
    keeps the best checkpoint from rotation. A checkpoint saved because a stop signal arrived (preemption,
    time limit) is not evaluated: the job has only the signal's grace period left, and scoring it in the
    next job could eat that job's window again; such a checkpoint is simply not a candidate (the regular
    saves, every trainer.save_steps, are)."""

    def __init__(
        self,
        evaluator: Evaluator,
        generator,
        meter,
        checkpoint_of,
        on_result=None,
        earlier_scores: dict | None = None,
        stopping=lambda: False,
        abandonable=contextlib.nullcontext,
    ):
        self.stopping = stopping  # a stop signal arrived: a save now only hands over to the next job
        self.abandonable = abandonable  # a stop signal during the evaluation abandons it (GracefulStop)
        self.evaluator = evaluator
        self.generator = generator
        self.benchmark = evaluator.selection
        self.meter = meter
        self.checkpoint_of = checkpoint_of  # step -> checkpoint folder (RunRecord.checkpoint)
        self.on_result = on_result
        self.scores: dict[int, float] = {
            int(step): score for step, score in (earlier_scores or {}).items()
        }  # before a resume

    @property
    def best_step(self) -> int | None:
        """The step of the highest score; the earliest of equal scores."""
        return max(self.scores, key=lambda s: (self.scores[s], -s)) if self.scores else None

    def on_step_begin(self, args, state, control, **kwargs):
        # The trainer rotates checkpoints before on_save, and a resumed state is the one saved before its
        # own step was scored: name the best one before every save, so that rotation always keeps it.
        if self.best_step is not None:
            state.best_model_checkpoint = str(self.checkpoint_of(self.best_step))

    def on_save(self, args, state, control, **kwargs):
        if self.stopping():  # the job has seconds left to hand over: this checkpoint is not a candidate
            log.info("Checkpoint %d saved at a stop signal: not scored, not a selection candidate.", state.global_step)
            return
        step = state.global_step
        with self.abandonable(), self.meter.evaluating("selection"):
            results = self.evaluator.run(
                self.generator, f"step-{step:06d}", [self.benchmark], seed=self.evaluator.selection_seed
            )
        result = results[self.benchmark.name]
        self.scores[step] = result["pass@1"]
        if self.on_result is not None:
            self.on_result(step, result)
