"""The adapter family (lora.variant) and its learning-rate rule (lora.lr_rule), all through PEFT.

Variants, each a PEFT option:
- lora: W + (alpha / r) * B @ A, B starting at zero;
- rslora: the same with alpha / sqrt(r) (PEFT's use_rslora);
- dora: a learned magnitude per output row times the direction of W + scale * B @ A (use_dora);
- pissa: A and B start from the top-r singular vectors of W and the frozen base is W minus them
  (init_lora_weights="pissa"). That start is computed once per model, dtype and adapter shape and
  kept in the model cache (the residual base with the initial adapter beside it), so every run,
  resume and evaluation of that shape starts from the very same tensors; final/ holds PEFT's
  conversion to a plain LoRA (rank 2r) of the original model, which any LoRA loader (vLLM too) applies.

The learning-rate rule gives the rate the optimizer gets (lora.effective_learning_rate, written into
the run's config, summary and W&B config); trainer.learning_rate stays the value the rule starts from.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..errors import UserError

log = logging.getLogger(__name__)

VARIANTS = ("lora", "rslora", "dora", "pissa")
LR_RULES = ("fixed", "sqrt_rank", "inverse_rank", "lwr")
PISSA_INITIAL = "pissa_initial"  # the initial adapter's folder, in the cached start and in a run folder


def variant_of(lora_cfg: DictConfig) -> str | None:
    """lora.variant, checked; None for full fine-tuning (lora=none)."""
    if lora_cfg.rank is None:
        return None
    variant = lora_cfg.get("variant") or "lora"
    if variant not in VARIANTS:
        raise UserError(f"lora.variant={variant!r} is unknown; use one of {', '.join(VARIANTS)}.")
    return variant


# The adapter ranks vLLM serves (its LoRAConfig.max_lora_rank, vllm/config/lora.py in 0.19.1 and 0.31)
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def vllm_max_lora_rank(rank: int) -> int:
    """The engine's max_lora_rank for an adapter of this rank: the next rank vLLM accepts (24 -> 32, a PiSSA run's
    2 x 100 -> 256); refused above vLLM's largest."""
    fitting = [allowed for allowed in VLLM_LORA_RANKS if allowed >= int(rank)]
    if not fitting:
        raise UserError(
            f"A rank-{rank} LoRA adapter cannot be evaluated with vLLM, which serves ranks up to "
            f"{VLLM_LORA_RANKS[-1]}: "
            f"use lora.rank <= {VLLM_LORA_RANKS[-1]} (<= {VLLM_LORA_RANKS[-1] // 2} with lora.variant=pissa, saved "
            "at twice its rank), or eval.backend=hf."
        )
    return fitting[0]


def evaluated_rank(lora_cfg: DictConfig) -> int | None:
    """The rank of the adapter a run saves for evaluation: a PiSSA run's final/ is a LoRA of the original model
    at twice the rank."""
    if lora_cfg.rank is None:
        return None
    return int(lora_cfg.rank) * (2 if variant_of(lora_cfg) == "pissa" else 1)


def lora_config(lora_cfg: DictConfig, init_lora_weights: bool | str = True):
    """PEFT LoraConfig for lora.*; None (full fine-tuning) when lora.rank is null. A PiSSA run gets
    a plain start here: its initial adapter is loaded from the cached PiSSA start (load_pissa_start)."""
    if lora_cfg.rank is None:
        return None
    from peft import LoraConfig

    rank = int(lora_cfg.rank)
    if rank < 1:
        raise UserError(f"lora.rank={rank}: use a positive rank, or lora=none for full fine-tuning.")
    variant = variant_of(lora_cfg)
    alpha = float(lora_cfg.alpha) if lora_cfg.alpha is not None else float(lora_cfg.alpha_ratio) * rank
    target = lora_cfg.target_modules
    return LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=float(lora_cfg.dropout),
        target_modules=target if isinstance(target, str) else list(target),
        use_rslora=variant == "rslora",
        use_dora=variant == "dora",
        init_lora_weights=init_lora_weights,
        task_type="CAUSAL_LM",
    )


def effective_learning_rate(lora_cfg: DictConfig, learning_rate: float) -> float:
    """The optimizer's learning rate under lora.lr_rule:
    fixed: trainer.learning_rate at every rank;
    sqrt_rank: trainer.learning_rate * sqrt(lr_reference_rank / rank);
    inverse_rank: trainer.learning_rate * lr_reference_rank / rank;
    lwr ("LoRA Without Regret"): lwr_factor (10) * full_ft_learning_rate, whatever the rank."""
    rule = lora_cfg.get("lr_rule") or "fixed"
    if rule not in LR_RULES:
        raise UserError(f"lora.lr_rule={rule!r} is unknown; use one of {', '.join(LR_RULES)}.")
    if rule == "fixed":
        return float(learning_rate)
    if lora_cfg.rank is None:
        raise UserError(
            f"lora.lr_rule={rule} sets an adapter's learning rate; full fine-tuning (lora=none) uses "
            f"trainer.learning_rate: set lora.lr_rule=fixed."
        )
    if rule == "lwr":
        if lora_cfg.get("full_ft_learning_rate") is None:
            raise UserError(
                "lora.lr_rule=lwr needs the full fine-tuning learning rate it multiplies: "
                "set lora.full_ft_learning_rate (e.g. 1e-6)."
            )
        return float(lora_cfg.lwr_factor) * float(lora_cfg.full_ft_learning_rate)
    ratio = int(lora_cfg.lr_reference_rank) / int(lora_cfg.rank)
    return float(learning_rate) * (ratio**0.5 if rule == "sqrt_rank" else ratio)


def resolve_learning_rate(lora_cfg: DictConfig, learning_rate: float) -> float:
    """Write the effective learning rate of trainer.learning_rate `learning_rate` into the lora node (the run's
    config.yaml and W&B config show it as lora.effective_learning_rate)."""
    from omegaconf import open_dict

    rate = effective_learning_rate(lora_cfg, learning_rate)
    with open_dict(lora_cfg):
        lora_cfg.effective_learning_rate = rate
    return rate


# --- PiSSA -------------------------------------------------------------------------------------------


def pissa_start(lora_cfg: DictConfig, model_cfg: DictConfig, base_folder: str, dtype, cache_dir: Path) -> Path:
    """The cached PiSSA start of this model and adapter shape: a model folder holding the residual
    base weights, with the initial adapter in its pissa_initial/ (built once; jobs that need it at
    the same time wait for the one that builds it)."""
    from .models import cached_folder

    spec = OmegaConf.create(
        {
            "name": f"{model_cfg.name}-pissa-r{lora_cfg.rank}",
            "base_folder": str(Path(base_folder).resolve()) if Path(base_folder).exists() else base_folder,
            "base_revision": model_cfg.revision,
            "weights_dtype": str(dtype).removeprefix("torch."),
            "lora": {k: lora_cfg[k] for k in ("rank", "alpha", "alpha_ratio", "target_modules")},
        }
    )
    return cached_folder(Path(cache_dir), spec, lambda s, out: _build_pissa(lora_cfg, s, out))


def _build_pissa(lora_cfg: DictConfig, spec: DictConfig, out: Path) -> None:
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"  # the SVDs are much faster on a GPU
    base = AutoModelForCausalLM.from_pretrained(spec.base_folder, dtype=getattr(torch, spec.weights_dtype)).to(device)
    model = get_peft_model(base, lora_config(lora_cfg, init_lora_weights="pissa"))
    model.peft_config["default"].init_lora_weights = True  # saved as a plain start: its weights are the SVD's
    model.save_pretrained(out / PISSA_INITIAL)
    residual = model.unload()  # the adapter layers removed, not merged: the base minus the principal part
    residual.to("cpu").save_pretrained(out)
    AutoTokenizer.from_pretrained(spec.base_folder).save_pretrained(out)
    log.info("PiSSA start of %s built in %s", spec.name, out)


def load_pissa_start(model, start: Path, run_dir: Path) -> Path:
    """Load the cached initial adapter into the run's (freshly initialized) adapter, and keep a copy of
    it in the run folder for the conversion of final/; returns that copy."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    initial = start / PISSA_INITIAL
    result = set_peft_model_state_dict(model, load_file(str(initial / "adapter_model.safetensors")))
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise RuntimeError(f"The PiSSA start in {start} does not fit this adapter: {unexpected[:3]}")
    copy = run_dir / PISSA_INITIAL
    if not (copy / "adapter_model.safetensors").exists():
        shutil.copytree(initial, copy, dirs_exist_ok=True)
    return copy


def save_adapter(trainer, folder: Path, pissa_initial: Path | None) -> None:
    """The trainer's save (adapter, tokenizer); a PiSSA adapter converted to a plain LoRA of the
    original model, so that it applies without the residual base."""
    trainer.save_model(str(folder))
    if pissa_initial is not None:
        model = trainer.accelerator.unwrap_model(trainer.model)
        model.save_pretrained(str(folder), path_initial_model_for_weight_conversion=str(pissa_initial))
