"""Checks a run makes on itself in its first minutes, each on by default with one switch (`guards.*`).

A broken study run can look healthy for hours: rollouts sampled from stale weights (a weight sync that
sends nothing) still give normal losses; a second BOS token shifts every prompt; memory that does not fit
shows only at the longest batch. Each guard stops the run with one line naming the cause (a
`RunCheckFailed`, recorded in summary.json as the run's error), or warns once:

- `guards.prompt_ids`: the first training prompt, tokenized by TRL itself, has exactly the BOS tokens
  its chat template renders, and the evaluation makes the same ids from the same problem.
- `guards.weight_sync`: on the vLLM path TRL logs the mean gap between the engine's and the trainer's
  log-probabilities of the sampled tokens (`sampling/sampling_logp_difference/mean`). At the first step
  the adapter is zero, so engine and trainer hold the same model whatever the sync does, and the gap
  there is the numeric floor of this engine, dtype and length (0.035 to 0.044 on vLLM's CPU backend, which
  stays there in a healthy run; a sync that sends nothing reaches 1.4 at step 2, BENCHMARKS.md). From
  `guards.logp_gap_after_steps` on, a mean gap above `guards.max_logp_gap`, or above 3x that floor when the
  floor is higher, on two logged steps in a row means the engine did not get the trained weights.
- `guards.is_mask_warn_share`: the share of sequences TRL's sequence-level importance-sampling mask drops
  (their ratio set to 0) is logged as `sampling/is_masked_share`; above this share a warning names the
  setting that changes it, once.
- `guards.memory`: before loading on CUDA, the estimated peak (rlvr_sweeps.training.memory) must fit the device.
"""

from __future__ import annotations

import logging

from transformers import TrainerCallback

from ..errors import UserError

log = logging.getLogger(__name__)

LOGP_GAP = "sampling/sampling_logp_difference/mean"
LOGP_GAP_MAX = "sampling/sampling_logp_difference/max"
IS_MASKED_SHARE = "sampling/is_masked_share"
STRIKES = 2  # logged steps in a row above the threshold: one noisy step is not a broken sync
FLOOR_FACTOR = 3.0  # the threshold is at least this multiple of the gap before the adapter moved


class RunCheckFailed(UserError):
    """A guard found the run broken; the message names the cause and the switch."""


class RolloutGuard(TrainerCallback):
    """The weight-sync and importance-sampling-mask guards, on the logged training metrics."""

    def __init__(self, max_logp_gap: float | None, after_steps: int = 1, is_mask_warn_share: float | None = None):
        self.max_logp_gap = max_logp_gap
        self.after_steps = max(1, int(after_steps))
        self.is_mask_warn_share = is_mask_warn_share
        self.strikes = 0
        self.warned = False
        self.floor = 0.0  # the largest gap while the adapter had not moved yet

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        gap = logs.get(LOGP_GAP)
        if isinstance(gap, (int, float)):
            self._check_gap(state.global_step, float(gap), logs.get(LOGP_GAP_MAX))
        share = logs.get(IS_MASKED_SHARE)
        if isinstance(share, (int, float)) and self.is_mask_warn_share is not None and not self.warned:
            if share > self.is_mask_warn_share:
                self.warned = True
                log.warning(
                    "TRL's importance-sampling mask dropped %.1f%% of the sequences at step %d (above "
                    "guards.is_mask_warn_share=%g): vLLM and the trainer disagree on long completions; raise "
                    "generation.vllm_importance_sampling_clip_max, or set "
                    "generation.vllm_importance_sampling_mode=sequence_truncate to keep them clipped.",
                    100 * share,
                    state.global_step,
                    self.is_mask_warn_share,
                )

    def threshold(self) -> float | None:
        """The gap above which a step counts against the sync: guards.max_logp_gap, or 3x the floor."""
        return None if self.max_logp_gap is None else max(self.max_logp_gap, FLOOR_FACTOR * self.floor)

    def _check_gap(self, step: int, gap: float, worst) -> None:
        if step <= self.after_steps:
            self.floor = max(self.floor, gap)
        threshold = self.threshold()
        if threshold is None or step <= self.after_steps or gap <= threshold:
            self.strikes = 0
            return
        self.strikes += 1
        if self.strikes >= STRIKES:
            raise RunCheckFailed(
                f"Rollouts do not come from the trained weights: at step {step} vLLM's log-probabilities of the "
                f"sampled tokens differ from the trainer's by {gap:.3g} per token on average (max "
                f"{worst if worst is None else round(float(worst), 3)}; threshold {threshold:.3g}, from "
                f"guards.max_logp_gap={self.max_logp_gap:g} and {self.floor:.3g} before the adapter moved), so the "
                "weight sync into the engine is broken (stale weights). Check the vLLM/TRL versions against "
                "constraints/, or set guards.weight_sync=false to train anyway."
            )


def masked_share(importance_sampling_ratio, mode: str) -> float | None:
    """The share of sequences a sequence-level mask dropped (ratio set to exactly 0); None in other modes."""
    if importance_sampling_ratio is None or mode != "sequence_mask":
        return None
    flat = importance_sampling_ratio.flatten()
    return float((flat == 0).float().mean().item()) if flat.numel() else 0.0


def leading_bos(ids: list[int], bos_id: int | None) -> int:
    count = 0
    while bos_id is not None and count < len(ids) and ids[count] == bos_id:
        count += 1
    return count


def implied_bos(tokenizer, prompt) -> int:
    """The BOS tokens a prompt should start with: those its chat template renders as text (chats), or the
    one the tokenizer adds to plain text when it adds one."""
    bos = tokenizer.bos_token
    if not bos:
        return 0
    if isinstance(prompt, list):
        text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        count = 0
        while text.startswith(bos, count * len(bos)):
            count += 1
        return min(count, 1)  # a template that renders two renders one too many
    return leading_bos(tokenizer("")["input_ids"], tokenizer.bos_token_id)


def check_prompt_ids(tokenizer, prompt, train_ids: list[int], eval_ids: list[int]) -> None:
    """Refuse a run whose first training prompt has another BOS count than its template implies, or whose
    evaluation tokenizes the same problem differently."""
    expected, found = implied_bos(tokenizer, prompt), leading_bos(list(train_ids), tokenizer.bos_token_id)
    if found != expected:
        raise RunCheckFailed(
            f"The first training prompt starts with {found} BOS token(s) ({tokenizer.bos_token!r}) where the chat "
            f"template implies {expected}: the template renders BOS and the tokenizer adds another (or none). Fix "
            "the model's chat template or tokenizer settings, or set guards.prompt_ids=false."
        )
    if list(train_ids) != list(eval_ids):
        at = next(
            (i for i, (a, b) in enumerate(zip(train_ids, eval_ids)) if a != b), min(len(train_ids), len(eval_ids))
        )
        raise RunCheckFailed(
            f"Evaluation prompts are not tokenized as training prompts: the same problem gives different ids from "
            f"token {at} on ({len(train_ids)} vs {len(eval_ids)} tokens). Evaluate with the training template "
            "(prompt.*, the model's chat template), or set guards.prompt_ids=false."
        )
