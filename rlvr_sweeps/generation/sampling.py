"""What every evaluation backend shares: benchmarks and their sampling, the Generator protocol, completions,
seeds, the backend choice.

Backends (transformers in `generators`, vLLM in `vllm_backend`) take prompts as token ids made by
`data.tokenize_prompts`, the same call TRL makes for training rollouts, so that an engine's own
tokenizer never adds a second BOS to a chat template that already writes one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

from omegaconf import DictConfig

from ..errors import UserError

BACKENDS = ("hf", "vllm")


@dataclass(frozen=True)
class Benchmark:
    """One benchmark and how it is sampled (an entry of `eval.benchmarks`)."""

    name: str
    """The benchmark's name, used in metric names: eval/<name>/pass@1."""
    cfg: DictConfig
    """Where the problems come from (the same keys as a data config)."""
    n: int
    """Samples per problem."""
    ks: tuple[int, ...]
    """The k of the reported Pass@k (each <= n)."""
    temperature: float
    """Sampling temperature (0 = greedy: one completion stands for all n)."""
    top_p: float
    """Nucleus sampling."""
    max_new_tokens: int
    """Generation limit per completion, independent of training's max_completion_length."""
    max_problems: int | None = None
    """Only the first this many problems (a fixed subset; the selection evaluation uses it)."""


def benchmarks_from_config(eval_cfg: DictConfig) -> list[Benchmark]:
    """The configured benchmarks, checked before any work starts; eval.max_problems, when set, keeps the first
    problems of each (a fixed subset)."""
    benchmarks = []
    cap = int(eval_cfg.max_problems) if eval_cfg.get("max_problems") else None
    for name, cfg in (eval_cfg.get("benchmarks") or {}).items():
        ks = tuple(int(k) for k in cfg.k)
        n = int(cfg.n)
        if not ks or min(ks) < 1:
            raise UserError(f"eval.benchmarks.{name}.k={list(ks)}: give k values of at least 1.")
        if n < max(ks):
            raise UserError(
                f"eval.benchmarks.{name}: n={n} samples per problem cannot estimate Pass@{max(ks)}; "
                f"raise eval.sampling.n to at least {max(ks)} or lower eval.sampling.k."
            )
        if cfg.max_new_tokens is None:
            raise UserError(
                f"eval.benchmarks.{name}.max_new_tokens is not set (this model has no eval_max_new_tokens); "
                f"set eval.sampling.max_new_tokens."
            )
        if int(cfg.max_new_tokens) < 1:
            raise UserError(f"eval.benchmarks.{name}.max_new_tokens={cfg.max_new_tokens}: give at least 1.")
        benchmarks.append(
            Benchmark(name, cfg, n, ks, float(cfg.temperature), float(cfg.top_p), int(cfg.max_new_tokens), cap)
        )
    select_on = eval_cfg.get("select_on")
    if select_on and select_on not in {b.name for b in benchmarks}:
        raise UserError(
            f"eval.select_on={select_on} is not among the benchmarks {[b.name for b in benchmarks]}; "
            f"add it, e.g. eval=[{select_on},...]."
        )
    selection_benchmark(eval_cfg, benchmarks)
    return benchmarks


def selection_benchmark(eval_cfg: DictConfig, benchmarks: list[Benchmark]) -> Benchmark | None:
    """The eval.select_on benchmark with the sampling settings of eval.selection (n, k, max_problems,
    max_new_tokens: by default training's max_completion_length, so that scoring a checkpoint costs what a
    few training steps cost, whatever the benchmark's own limit for the reported numbers)."""
    name = eval_cfg.get("select_on")
    if not name:
        return None
    base = next(b for b in benchmarks if b.name == name)
    settings = eval_cfg.get("selection") or {}
    n = int(settings.get("n") or base.n)
    ks = tuple(int(k) for k in (settings.get("k") or [1]))
    if max(ks) > n or min(ks) < 1:
        raise UserError(f"eval.selection: k={list(ks)} needs 1 <= k <= n={n}.")
    limits = [int(limit) for limit in (settings.get("max_problems"), base.max_problems) if limit]
    max_problems = min(limits) if limits else None
    max_new_tokens = int(settings.get("max_new_tokens") or base.max_new_tokens)
    if max_new_tokens < 1:
        raise UserError(f"eval.selection.max_new_tokens={max_new_tokens}: give at least 1.")
    return replace(
        base,
        n=n,
        ks=ks,
        max_problems=int(max_problems) if max_problems else None,
        max_new_tokens=min(max_new_tokens, base.max_new_tokens),
    )


@dataclass(frozen=True)
class Completion:
    text: str
    """The decoded completion, special tokens removed."""
    tokens: int
    """Generated tokens, the end-of-sequence token included."""
    truncated: bool
    """Stopped by max_new_tokens rather than by the model (scored as wrong)."""


class Generator(Protocol):
    def generate(self, prompt_ids: list[list[int]], benchmark: Benchmark, seed: int) -> list[list[Completion]]:
        """benchmark.n completions per prompt, sampled with the benchmark's settings, reproducible from seed."""
        ...


def sampling_seed(seed: int, index: int) -> int:
    """The seed of the index-th prompt (or batch) of an evaluation seeded with `seed`."""
    return int(seed) * 1_000_003 + index


def resolve_backend(backend: str, training_uses_vllm: bool) -> str:
    """eval.backend, with `auto` = vLLM when training generates with vLLM (generation.use_vllm), else transformers."""
    if backend == "auto":
        backend = "vllm" if training_uses_vllm else "hf"
    if backend not in BACKENDS:
        raise UserError(f"eval.backend={backend!r}: use auto, hf or vllm.")
    return backend
