"""What every evaluation backend shares: benchmarks and their sampling, the Generator protocol, completions,
seeds, the backend choice.

Backends (transformers in `generators`, vLLM in `vllm_backend`) take prompts as token ids made by
`data.tokenize_prompts`, the same call TRL makes for training rollouts, so that an engine's own
tokenizer never adds a second BOS to a chat template that already writes one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from omegaconf import DictConfig

from .errors import UserError

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
