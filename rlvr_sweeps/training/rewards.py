"""Reward functions in TRL's convention: f(prompts, completions, **dataset_columns) -> list[float].

`answer` is the dataset column with the gold answer. Completions are strings, or chats whose last
message holds the text.
"""

from __future__ import annotations

from omegaconf import DictConfig

from ..errors import UserError
from ..tasks.verifier import MathVerifier


def completion_text(completion) -> str:
    if isinstance(completion, str):
        return completion
    return completion[-1]["content"] if completion else ""


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} with balanced braces, or None; linear in the text."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for i in range(begin, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            if depth == 0:
                return text[begin:i]
            depth -= 1
    return None


def make_accuracy_reward(verifier: MathVerifier):
    def accuracy_reward(completions, answer, **kwargs) -> list[float]:
        """1.0 when the final answer equals the gold answer by math-verify (gold first), else 0.0."""
        verdicts = verifier.verify_many(list(answer), [completion_text(c) for c in completions])
        return [1.0 if v.correct else 0.0 for v in verdicts]

    return accuracy_reward


def make_format_reward(max_chars: int):
    def format_reward(completions, **kwargs) -> list[float]:
        """1.0 when the completion ends its reasoning with a non-empty \\boxed{...}, else 0.0."""
        boxed = [last_boxed(completion_text(c)[-max_chars:]) for c in completions]
        return [1.0 if b is not None and b.strip() else 0.0 for b in boxed]

    return format_reward


REWARD_NAMES = ("accuracy", "format")


def check_reward_names(reward_cfg: DictConfig) -> None:
    """reward.weights names known reward functions, at least one."""
    unknown = [name for name in reward_cfg.weights if name not in REWARD_NAMES]
    if unknown:
        raise UserError(f"Unknown reward function(s) {unknown} in reward.weights; available: {sorted(REWARD_NAMES)}.")
    if not reward_cfg.weights:
        raise UserError(
            "reward.weights is empty: name at least one reward function, e.g. reward.weights.accuracy=1.0."
        )


def zero_when_truncated(function, max_completion_length: int, eos_token_ids: set[int]):
    """`function`, but a completion cut at max_completion_length (no end-of-sequence token) scores 0, as
    the evaluation counts it wrong; otherwise a policy is paid for answers that evaluation rejects and
    its completions drift to the limit. TRL passes each completion's token ids as `completion_ids`."""

    def wrapped(completions, completion_ids=None, **kwargs) -> list[float]:
        rewards = function(completions, completion_ids=completion_ids, **kwargs)
        if completion_ids is None:
            return rewards
        cut = [
            len(ids) >= max_completion_length and (not ids or ids[-1] not in eos_token_ids) for ids in completion_ids
        ]
        return [0.0 if truncated else reward for reward, truncated in zip(rewards, cut, strict=True)]

    wrapped.__name__ = function.__name__
    return wrapped


def build_reward_functions(
    reward_cfg: DictConfig,
    verifier: MathVerifier,
    max_completion_length: int | None = None,
    eos_token_ids: set[int] | None = None,
) -> tuple[list, list[float]]:
    """The reward functions named in reward.weights, and their weights in the same order; with
    reward.score_truncated=false, each scores 0 for a truncated completion."""
    check_reward_names(reward_cfg)
    factories = {
        "accuracy": lambda: make_accuracy_reward(verifier),
        "format": lambda: make_format_reward(int(reward_cfg.max_chars)),
    }
    functions = [factories[name]() for name in reward_cfg.weights]
    if not reward_cfg.get("score_truncated", True):
        if not max_completion_length:
            raise ValueError("reward.score_truncated=false needs the completion limit")
        functions = [zero_when_truncated(f, int(max_completion_length), set(eos_token_ids or ())) for f in functions]
    return functions, [float(w) for w in reward_cfg.weights.values()]


def make_verifier(reward_cfg: DictConfig) -> MathVerifier:
    """The answer checker of rewards and evaluation alike (reward.timeout_s, max_chars, literal_numbers)."""
    return MathVerifier(
        timeout_s=reward_cfg.timeout_s,
        max_chars=reward_cfg.max_chars,
        literal_numbers=bool(reward_cfg.get("literal_numbers", False)),
    )
