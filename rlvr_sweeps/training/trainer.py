"""TRL's GRPOTrainer with a PEFT adapter, configured from the trainer, generation, lora and budget groups.

`trainer.*` and `generation.*` keys are GRPOConfig fields under TRL's own names and pass through
unchanged; the few fields other groups own are filled in here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib

from omegaconf import DictConfig, OmegaConf
from trl import GRPOConfig, GRPOTrainer

from ..errors import UserError
from ..infra.hardware import Hardware
from ..policy.lora_merge import merged_lora
from ..run.guards import IS_MASKED_SHARE, masked_share

# GRPOConfig fields that belong to another concept; setting them under trainer.* is refused.
OWNED_ELSEWHERE = {
    "max_steps": "budget.max_steps",
    "reward_weights": "reward.weights",
    "output_dir": "the run folder (paths.runs, name)",
    "report_to": "logger",
    "run_name": "the run's overrides",
    "use_cpu": "the hardware (detected)",
}


def grpo_config(
    trainer_cfg: DictConfig,
    generation_cfg: DictConfig,
    *,
    learning_rate: float,
    max_steps: int | None,
    output_dir: str,
    hardware: Hardware,
    run_name: str,
    reward_weights: list[float],
) -> GRPOConfig:
    """TRL's GRPOConfig from the `trainer` and `generation` nodes (TRL's own field names), with what other
    groups own given as plain values: the optimizer's `learning_rate` (lora.lr_rule applied:
    adapters.effective_learning_rate) and the budget's `max_steps`."""
    fields = {f.name for f in dataclasses.fields(GRPOConfig)}
    kwargs = {}
    for group, node in (("trainer", trainer_cfg), ("generation", generation_cfg)):
        for key, value in OmegaConf.to_container(node, resolve=True).items():
            if key in OWNED_ELSEWHERE:
                raise UserError(f"{group}.{key} is set by {OWNED_ELSEWHERE[key]}, not by {group}.*; remove it.")
            if key not in fields:
                close = difflib.get_close_matches(key, fields, n=3)
                hint = f" Did you mean {', '.join(close)}?" if close else ""
                raise UserError(f"{group}.{key} is not a field of TRL's GRPOConfig.{hint}")
            kwargs[key] = value
    if kwargs.get("bf16") is None:
        kwargs["bf16"] = hardware.has_cuda
    kwargs.update(
        learning_rate=float(learning_rate),
        output_dir=output_dir,
        max_steps=int(max_steps) if max_steps else -1,
        reward_weights=reward_weights,
        report_to="none",  # W&B logging goes through the run's own callback (rlvr_sweeps.infra.tracking)
        run_name=run_name,
        use_cpu=not hardware.has_cuda,
    )
    try:
        return GRPOConfig(**kwargs)
    except (ValueError, TypeError) as err:
        raise UserError(f"TRL refused the trainer settings: {err}") from err


class RLVRTrainer(GRPOTrainer):
    """GRPOTrainer plus what a budgeted sweep needs: transformers rollouts from the merged adapter
    (lora.merge_for_rollouts; cost independent of the rank), the count of generated tokens (for the
    token budget), and a vLLM weight sync that leaves the frozen base weights bit-exact (on vLLM's
    CPU backend too)."""

    def __init__(self, *args, on_generated_tokens=None, merge_lora_for_rollouts: bool = True, **kwargs):
        self._on_generated_tokens = on_generated_tokens
        self._merge_lora_for_rollouts = merge_lora_for_rollouts
        self.full_length_steps: set[int] = set()  # optimizer steps whose rollouts all run to max_completion_length
        super().__init__(*args, **kwargs)
        if getattr(self, "vllm_generation", None) is not None:
            from ..generation.vllm_backend import bridge_cpu_weight_sync, exact_weight_sync

            exact_weight_sync(self.vllm_generation)
            bridge_cpu_weight_sync(self.vllm_generation)

    def _generate_single_turn(self, *args, **kwargs):
        if self.use_vllm or not self._merge_lora_for_rollouts:  # TRL merges for vLLM itself
            return super()._generate_single_turn(*args, **kwargs)
        with merged_lora(self.accelerator.unwrap_model(self.model)):
            return super()._generate_single_turn(*args, **kwargs)

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if self.use_vllm:  # the share of sequences TRL's importance-sampling mask drops (guards.is_mask_warn_share)
            share = masked_share(output.get("importance_sampling_ratio"), self.vllm_importance_sampling_mode)
            if share is not None:
                self._metrics["train" if self.model.training else "eval"][IS_MASKED_SHARE].append(share)
        return output

    def _generate(self, prompts: list):
        forced = self.model.training and self.state.global_step + 1 in self.full_length_steps
        with self._full_length() if forced else contextlib.nullcontext():
            output = super()._generate(prompts)
        completion_ids = output[1]
        if self._on_generated_tokens is not None and self.model.training:
            self._on_generated_tokens(sum(len(ids) for ids in completion_ids))
        return output

    @contextlib.contextmanager
    def _full_length(self):
        """Every completion of this generation runs to max_completion_length (its end-of-sequence token held back):
        the memory worst case of the step, which a real run meets only when one rollout of a micro-batch runs long.
        The minimum goes where each rollout path reads its sampling settings: vLLM's SamplingParams, or the
        transformers GenerationConfig and the generation kwargs TRL passes beside it."""
        length = int(self.max_completion_length)
        vllm = getattr(self, "vllm_generation", None)
        if self.use_vllm and vllm is not None:
            saved = dict(vllm.generation_kwargs)
            vllm.generation_kwargs["min_tokens"] = length
            try:
                yield
            finally:
                vllm.generation_kwargs.clear()
                vllm.generation_kwargs.update(saved)
            return
        saved_config, saved_kwargs = self.generation_config.min_new_tokens, dict(self.generation_kwargs or {})
        self.generation_config.min_new_tokens = length
        if self.generation_kwargs is not None:
            self.generation_kwargs["min_new_tokens"] = length
        try:
            yield
        finally:
            self.generation_config.min_new_tokens = saved_config
            if self.generation_kwargs is not None:
                self.generation_kwargs.clear()
                self.generation_kwargs.update(saved_kwargs)


def load_checkpoint_weights(model, checkpoint) -> None:
    """Load a saved checkpoint's trained weights into the model in place: the LoRA adapter, or
    the whole model after full fine-tuning."""
    from pathlib import Path

    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    adapter = Path(checkpoint) / "adapter_model.safetensors"
    if adapter.exists():
        set_peft_model_state_dict(model, load_file(str(adapter)))
    else:
        model.load_state_dict(load_file(str(Path(checkpoint) / "model.safetensors")), strict=False)
